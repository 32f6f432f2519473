//! The PostgreSQL wire protocol as far as Meridian handles it: finding
//! message boundaries ([`frame`]) and building or reading the handful of
//! messages the proxy writes or must inspect ([`messages`]).

pub mod frame;
pub mod messages;
