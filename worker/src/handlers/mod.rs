//! Job handlers, one file per queue. A handler turns a claimed job into an
//! [`Outcome`](crate::bookkeeper::Outcome); it never writes job state itself.

pub mod emails;
