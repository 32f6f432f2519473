//! Failover for Meridian.
