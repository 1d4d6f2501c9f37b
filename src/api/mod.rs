//! The CWP API: the signed client ([`client`]), parsing of answers ([`response`]) and typed
//! errors with their classification ([`error`]).

pub mod error;
