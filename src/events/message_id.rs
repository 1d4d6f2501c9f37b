//! Journal MESSAGE_IDs, one per event kind. Published ids never change.

/// `status_changed`
pub const STATUS_CHANGED: &str = "96e7064e0a524ac7b1e20a88b3782012";
/// `poll_failed`
pub const POLL_FAILED: &str = "3d90fc203a8b4463af8d985fb552fa47";
/// `poll_recovered`
pub const POLL_RECOVERED: &str = "b8fa4f74ca8c4a029afb8aa038dafb78";
/// `rate_limited`
pub const RATE_LIMITED: &str = "c23c7cc9c554484ba44f909f582ec033";
/// `clock_skew`
pub const CLOCK_SKEW: &str = "7250cf90ebe840e6a345d08cf9c41e24";
/// `credentials_failed`
pub const CREDENTIALS_FAILED: &str = "aa25db82d8024311b67cd8df7eaf17fd";
/// `watchlist_loaded`
pub const WATCHLIST_LOADED: &str = "9b56ec15cffe4d65b213eeeff4932ec1";
/// `config_rejected`
pub const CONFIG_REJECTED: &str = "544f05c9e40446b9ae0e8f408089ddbd";
/// `daemon_started`
pub const DAEMON_STARTED: &str = "f07a7c86a1314a8a8b2d7d14c61f0fef";
/// `daemon_stopping`
pub const DAEMON_STOPPING: &str = "0168270a5f6d4faabcfa0fbf890012f9";
/// `state_damaged`
pub const STATE_DAMAGED: &str = "77ea5f58a2204885b827350524d19e4b";
/// `port_opened`
pub const PORT_OPENED: &str = "52d5b12fdafb46bca6c34d819ee7029d";
/// `port_closed`
pub const PORT_CLOSED: &str = "32817450a9724ac2820056b64974769c";
/// `inventory_baseline`
pub const INVENTORY_BASELINE: &str = "433725c5cec84f6b99cfeaba5a650de6";
/// `inventory_failed`
pub const INVENTORY_FAILED: &str = "a8e150bc9175427caeee3e1182cfb15e";
/// `scan_requested`
pub const SCAN_REQUESTED: &str = "96cd3215c62c42c7b0d7562f3d57830f";
/// `discovery_failed`
pub const DISCOVERY_FAILED: &str = "72f52829f5be44069c00fcb8feec068a";
/// `account_failed`
pub const ACCOUNT_FAILED: &str = "9423784fbabd412cbf01eaa061936103";
/// `port_unexpected`
pub const PORT_UNEXPECTED: &str = "817d335cd35440f1b6e46af96b0e1ef0";
/// `port_unexpected_cleared`
pub const PORT_UNEXPECTED_CLEARED: &str = "e85c3c5a2bcd4229af51514039bfa483";
/// `port_missing`
pub const PORT_MISSING: &str = "49335b41811548f0b832d91b7bd9a44e";
/// `port_missing_cleared`
pub const PORT_MISSING_CLEARED: &str = "a104dc5489654042801a736866adbf43";
/// `delivery_failed`
pub const DELIVERY_FAILED: &str = "3c86d82bd10241d1b03633a47f7fe642";
/// `leader_elected`
pub const LEADER_ELECTED: &str = "63fdd3090b36853a9337df4be5c7efc6";
/// `leadership_lost`
pub const LEADERSHIP_LOST: &str = "e8acde0163f057e2e343b4b4feba9897";
/// Every id, for the catalog test.
pub const ALL: [&str; 25] = [
    STATUS_CHANGED,
    POLL_FAILED,
    POLL_RECOVERED,
    RATE_LIMITED,
    CLOCK_SKEW,
    CREDENTIALS_FAILED,
    WATCHLIST_LOADED,
    CONFIG_REJECTED,
    DAEMON_STARTED,
    DAEMON_STOPPING,
    STATE_DAMAGED,
    PORT_OPENED,
    PORT_CLOSED,
    INVENTORY_BASELINE,
    INVENTORY_FAILED,
    SCAN_REQUESTED,
    DISCOVERY_FAILED,
    ACCOUNT_FAILED,
    PORT_UNEXPECTED,
    PORT_UNEXPECTED_CLEARED,
    PORT_MISSING,
    PORT_MISSING_CLEARED,
    DELIVERY_FAILED,
    LEADER_ELECTED,
    LEADERSHIP_LOST,
];
