//! Which API an account's engine talks to, and so which lanes it has: the one place the two
//! backends differ in shape.
//!
//! - **yunjing**: status from `DescribeOpenPortTaskStatus` per agent (its lane's queue holds
//!   agents), the inventory through tasks (`CreateOpenPortTask`) and `DescribeOpenPorts`.
//! - **cwp**: status from `DescribeMachines` (its lane's queue holds listing cursors, one per
//!   machine type × region, each machine's `AgentStatus` the status of the agent whose Uuid it
//!   carries) and the inventory from `DescribeAssetPortInfoList` per machine (`Quuid`) at each
//!   agent's rescan slot.
//!
//! Everything else is one engine for both: the dispatcher loop, the lanes with their strict
//! limiters, rate controls and in-flight budgets, the agent table and its exactly-once status
//! rule, the state and inventory files, close confirmation, policy findings, metrics and the
//! event sink. The backend is the poller's ([`super::Poller::backend`]: a `Client` signing
//! for `cwp` is a `cwp` backend), so an engine cannot be built with lanes its client cannot
//! serve.

use super::lane::Action;

/// An account's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The yunjing API's task workflow.
    #[default]
    Yunjing,
    /// The live `cwp` API.
    Cwp,
}

impl Backend {
    /// The actions it calls, each with its own lane, in lane order.
    pub(crate) fn actions(self) -> &'static [Action] {
        match self {
            Backend::Yunjing => &[Action::PollStatus, Action::CreateTask, Action::FetchPorts],
            Backend::Cwp => &[Action::ListMachines, Action::FetchAssetPorts],
        }
    }

    /// The action its statuses come from (its rate is the one `STATUS=` shows).
    pub(crate) fn status_action(self) -> Action {
        match self {
            Backend::Yunjing => Action::PollStatus,
            Backend::Cwp => Action::ListMachines,
        }
    }

    /// The config word.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Yunjing => "yunjing",
            Backend::Cwp => "cwp",
        }
    }
}
