//! Storage backends. Each takes an object as a stream of `Bytes` through a
//! bounded channel (the pipe) and either commits it whole or leaves nothing.
//! Only `fs` exists so far; `http` and `s3` plug in behind the same shape.

pub mod fs;
