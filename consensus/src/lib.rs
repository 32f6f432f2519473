//! Consensus for Meridian.
