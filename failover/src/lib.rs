//! Failover for Meridian: a sans-IO core that turns health observations and
//! time into decisions (suspect, dead, fence, promote, re-point), and a thin
//! runtime on the Raft leader that carries them out.
//!
//! Nothing is built here yet (issue 4).
