//! The CWP APIs: the signed client ([`client`]), the size-capped body reader every HTTP client of
//! the daemon uses ([`body`]), parsing of answers ([`response`]) and typed
//! errors with their classification ([`error`]). One client sends to either API
//! ([`service`]): yunjing's actions are here ([`machines`], [`ports`] and the client's own),
//! the `cwp` API's in [`cwp`].

pub mod body;
pub mod client;
pub mod cwp;
pub mod error;
pub mod machines;
pub mod ports;
pub mod response;
pub mod service;

pub use client::{Client, ClientOptions, TaskStatus};
pub use error::{ApiError, ErrorClass, classify};
pub use service::ApiService;
