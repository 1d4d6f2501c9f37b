//! Tests of the policy core, one file per concern: the file format and its problems
//! (`parse`), globs and port specs (`spec`), host selection and evaluation (`evaluate`), the
//! changes between evaluations (`changes`), the shipped example (`example`) and the property
//! tests (`props`). Shared helpers live here.

mod changes;
mod evaluate;
mod example;
mod parse;
mod props;
mod spec;

use std::path::Path;

use super::{Capabilities, ConfigErrors, Finding, Findings, Host, Policy, PortFacts, Severity};

/// The policy in `text`, for the yunjing backend; panics (a test failure) on a problem.
pub(super) fn policy(text: &str) -> Policy {
    match Policy::from_toml_str(text, Path::new("policy.toml"), Capabilities::YUNJING) {
        Ok(policy) => policy,
        Err(errors) => panic!("policy refused:\n{errors}"),
    }
}

/// The problems of `text` with `caps`, as `file:line:col: message` lines.
pub(super) fn problems_with(text: &str, caps: Capabilities) -> Vec<String> {
    match Policy::from_toml_str(text, Path::new("policy.toml"), caps) {
        Ok(_) => panic!("policy accepted, expected problems:\n{text}"),
        Err(ConfigErrors { problems }) => problems.iter().map(ToString::to_string).collect(),
    }
}

/// The problems of `text` for the yunjing backend.
pub(super) fn problems(text: &str) -> Vec<String> {
    problems_with(text, Capabilities::YUNJING)
}

/// An owned host, lent to the policy as a [`Host`].
#[derive(Debug, Clone, Default)]
pub(super) struct TestHost {
    pub uuid: String,
    pub name: String,
    pub account: String,
    pub tags: Vec<Box<str>>,
    pub region: String,
    pub wan: bool,
}

impl TestHost {
    pub fn named(name: &str) -> TestHost {
        TestHost {
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            name: name.into(),
            account: "default".into(),
            ..TestHost::default()
        }
    }
    pub fn tags(mut self, tags: &[&str]) -> TestHost {
        self.tags = tags.iter().map(|t| Box::from(*t)).collect();
        self
    }
    pub fn account(mut self, account: &str) -> TestHost {
        self.account = account.into();
        self
    }
    pub fn region(mut self, region: &str) -> TestHost {
        self.region = region.into();
        self
    }
    pub fn uuid(mut self, uuid: &str) -> TestHost {
        self.uuid = uuid.into();
        self
    }
    pub fn wan(mut self, wan: bool) -> TestHost {
        self.wan = wan;
        self
    }
    pub fn host(&self) -> Host<'_> {
        Host {
            uuid: &self.uuid,
            name: &self.name,
            account: &self.account,
            tags: &self.tags,
            region: &self.region,
            wan: self.wan,
        }
    }
}

/// yunjing's facts of a port: number and process.
pub(super) fn port(port: u16, process: &str) -> PortFacts<'_> {
    PortFacts {
        port,
        process,
        proto: None,
        bind_ip: None,
        user: None,
    }
}

/// Evaluates `ports` (port, process) on `host`.
pub(super) fn eval(policy: &Policy, host: &TestHost, ports: &[(u16, &str)]) -> Findings {
    policy.evaluate(&host.host(), ports.iter().map(|&(p, name)| port(p, name)))
}

pub(super) fn unexpected(port: u16, process: &str, rule: &str, severity: Severity) -> Finding {
    Finding::Unexpected {
        port,
        process: process.into(),
        rule: rule.into(),
        severity,
    }
}

pub(super) fn missing(
    rule: &str,
    spec: &str,
    port: u16,
    process: &str,
    severity: Severity,
) -> Finding {
    Finding::Missing {
        rule: rule.into(),
        spec: spec.into(),
        port,
        process: process.into(),
        severity,
    }
}

pub(super) fn findings(items: impl IntoIterator<Item = Finding>) -> Findings {
    Findings(items.into_iter().collect())
}
