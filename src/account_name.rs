//! The rule for an account's name, alone: the config, the watchlist and the policy file all
//! check names with it (and the default account's name lives here), and it depends on nothing (so those modules need not reach
//! [`crate::account`], which depends on the events).

/// The name of the account that the top-level `watchlist`, `[credentials]` and `[discovery]`
/// configure.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The longest account name: it is a metrics label, a log field and part of a file name.
pub const MAX_ACCOUNT_NAME: usize = 32;

/// `[a-z0-9_-]{1,32}`: safe in a file name, a label value and a journal field.
pub fn valid_account_name(name: &str) -> bool {
    (1..=MAX_ACCOUNT_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
