//! The CWP API: the signed client ([`client`]), the size-capped body reader every HTTP client of
//! the daemon uses ([`body`]), parsing of answers ([`response`]) and typed
//! errors with their classification ([`error`]).

pub mod body;
pub mod client;
pub mod error;
pub mod machines;
pub mod ports;
pub mod response;

pub use client::{Client, ClientOptions, TaskStatus};
pub use error::{ApiError, ErrorClass, classify};
