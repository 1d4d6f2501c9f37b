//! The `[credentials]` section: `source` picks a [`CredentialSettings`] variant, and each
//! source accepts only its own keys, so a key meant for another source is reported instead of
//! silently ignored. `source = "assume-role"` takes `base`, `role_arn`, `role_session_name`
//! and `duration`, plus the keys of its `base` source.

use reqwest::Url;
use toml::Spanned;

use super::Check;
use crate::config::raw::RawCredentials;
use crate::credentials::assume_role::{
    DEFAULT_DURATION, MAX_DURATION, MAX_ROLE_ARN_BYTES, RoleRequest, is_role_arn,
    is_role_session_name,
};
use crate::credentials::{
    CredentialSettings, DEFAULT_METADATA_ENDPOINT, SourceKind, is_cam_role_name,
};
use crate::endpoint::with_trailing_slash;
use crate::problems::{Reported, shown};

/// The longest profile (section) name accepted, in characters: it is printed in messages.
const MAX_PROFILE_CHARS: usize = 256;

/// How the operator may spell `source`, for messages.
const SOURCES: &str =
    "\"env\", \"systemd\", \"profile\", \"cvm-role\", \"file\" or \"assume-role\"";
/// The sources `base` may name, for messages.
const BASES: &str = "\"env\", \"systemd\", \"profile\", \"cvm-role\" or \"file\"";
/// The longest `role_session_name`, as STS allows.
const MAX_SESSION_NAME_CHARS: usize = 128;

impl Check<'_> {
    pub(in crate::config) fn credentials(
        &mut self,
        section: &Spanned<RawCredentials>,
    ) -> Result<CredentialSettings, Reported> {
        let raw = section.get_ref();
        let Some(source) = &raw.source else {
            return Err(self.problems.at(
                section.span(),
                format!(
                    "[credentials] has no `source`: write source = {SOURCES}, or remove the \
                     section to use the default chain (systemd, environment, profile file, CVM role)"
                ),
            ));
        };
        let Some(kind) = SourceKind::from_name(source.get_ref().trim()) else {
            return Err(self.problems.at(
                source.span(),
                format!(
                    "`source` = {} is not a credential source; write source = {SOURCES}",
                    shown(source.get_ref())
                ),
            ));
        };
        // With assume-role, the base source's keys apply beside its own.
        let base = match kind {
            SourceKind::AssumeRole => Some(self.base(raw, source)),
            _ => None,
        };
        // Which keys each source uses; any other key present is a mistake worth reporting.
        let keys: [(&str, Option<&Spanned<String>>, SourceKind); 9] = [
            (
                "secret_id_file",
                raw.secret_id_file.as_ref(),
                SourceKind::File,
            ),
            (
                "secret_key_file",
                raw.secret_key_file.as_ref(),
                SourceKind::File,
            ),
            (
                "profile_path",
                raw.profile_path.as_ref(),
                SourceKind::Profile,
            ),
            ("profile", raw.profile.as_ref(), SourceKind::Profile),
            ("role", raw.role.as_ref(), SourceKind::CvmRole),
            (
                "metadata_endpoint",
                raw.metadata_endpoint.as_ref(),
                SourceKind::CvmRole,
            ),
            ("base", raw.base.as_ref(), SourceKind::AssumeRole),
            ("role_arn", raw.role_arn.as_ref(), SourceKind::AssumeRole),
            (
                "role_session_name",
                raw.role_session_name.as_ref(),
                SourceKind::AssumeRole,
            ),
        ];
        let duration_span = raw.duration.as_ref().map(Spanned::span);
        let keys = keys
            .into_iter()
            .map(|(key, value, used_by)| (key, value.map(Spanned::span), used_by))
            .chain([("duration", duration_span, SourceKind::AssumeRole)]);
        let mut misplaced = None;
        for (key, span, used_by) in keys {
            let (applies, why) = match &base {
                // An unknown base is reported; its keys are not judged against it.
                Some(Err(_)) => (true, String::new()),
                Some(Ok(base)) => (
                    used_by == *base || used_by == SourceKind::AssumeRole,
                    format!("source = \"assume-role\" with base = \"{}\"", base.name()),
                ),
                None => (used_by == kind, format!("source = \"{}\"", kind.name())),
            };
            if let Some(span) = span
                && !applies
            {
                misplaced = Some(self.problems.at(
                    span,
                    format!(
                        "`{key}` applies only to source = \"{}\", but {why}; remove the line or \
                         change `{}`",
                        used_by.name(),
                        if matches!(base, Some(Ok(_))) && used_by != SourceKind::AssumeRole {
                            "base"
                        } else {
                            "source"
                        },
                    ),
                ));
            }
        }
        let settings = match base {
            Some(base) => self.assume_role(raw, source, base?),
            None => self.source(raw, source, kind),
        };
        match misplaced {
            Some(reported) => Err(reported),
            None => settings,
        }
    }

    /// The settings of one source other than assume-role, from its own keys.
    fn source(
        &mut self,
        raw: &RawCredentials,
        source: &Spanned<String>,
        kind: SourceKind,
    ) -> Result<CredentialSettings, Reported> {
        match kind {
            SourceKind::Env => Ok(CredentialSettings::Env),
            SourceKind::Systemd => Ok(CredentialSettings::Systemd),
            SourceKind::Profile => self.profile(raw),
            SourceKind::CvmRole => self.cvm_role(raw),
            SourceKind::File => self.files(raw, source),
            SourceKind::AssumeRole => unreachable_assume_role(self, source),
        }
    }

    /// `base` of `source = "assume-role"`: required, any source but assume-role itself.
    fn base(
        &mut self,
        raw: &RawCredentials,
        source: &Spanned<String>,
    ) -> Result<SourceKind, Reported> {
        let Some(base) = &raw.base else {
            return Err(self.problems.at(
                source.span(),
                format!(
                    "source = \"assume-role\" needs `base`: add base = {BASES} (where the \
                     credentials that call STS AssumeRole come from) to [credentials]"
                ),
            ));
        };
        match SourceKind::from_name(base.get_ref().trim()) {
            Some(SourceKind::AssumeRole) => Err(self.problems.at(
                base.span(),
                format!(
                    "`base` = \"assume-role\": AssumeRole cannot sign with credentials of \
                     another AssumeRole; write base = {BASES}"
                ),
            )),
            Some(kind) => Ok(kind),
            None => Err(self.problems.at(
                base.span(),
                format!(
                    "`base` = {} is not a credential source; write base = {BASES}",
                    shown(base.get_ref())
                ),
            )),
        }
    }

    /// `source = "assume-role"`: the base source's settings, then the role to assume.
    fn assume_role(
        &mut self,
        raw: &RawCredentials,
        source: &Spanned<String>,
        base: SourceKind,
    ) -> Result<CredentialSettings, Reported> {
        let base = self.source(raw, source, base);
        let role_arn = match &raw.role_arn {
            Some(value) => {
                let arn = self
                    .text(
                        value,
                        "role_arn",
                        ROLE_ARN_EXAMPLE,
                        true,
                        MAX_ROLE_ARN_BYTES,
                    )?
                    .trim();
                if is_role_arn(arn) {
                    Ok(arn.to_owned())
                } else {
                    Err(self.problems.at(
                        value.span(),
                        format!(
                            "`role_arn` = {} is not a CAM role ARN: write \
                             qcs::cam::uin/<account UIN>:roleName/<role name>, e.g. role_arn = \
                             {ROLE_ARN_EXAMPLE}",
                            shown(arn)
                        ),
                    ))
                }
            }
            None => Err(self.problems.at(
                source.span(),
                format!(
                    "source = \"assume-role\" needs `role_arn`: add role_arn = \
                     {ROLE_ARN_EXAMPLE} (the role's ARN in the CAM console) to [credentials]"
                ),
            )),
        };
        let role_session_name = match &raw.role_session_name {
            Some(value) => {
                let name = self
                    .text(
                        value,
                        "role_session_name",
                        "\"cwp-portwatch\"",
                        true,
                        MAX_SESSION_NAME_CHARS,
                    )?
                    .trim();
                if is_role_session_name(name) {
                    Ok(name.to_owned())
                } else {
                    Err(self.problems.at(
                        value.span(),
                        format!(
                            "`role_session_name` = {} is not a session name: write 2 to 128 \
                             letters, digits and `_+=,.@-`, e.g. role_session_name = \
                             \"cwp-portwatch\"",
                            shown(name)
                        ),
                    ))
                }
            }
            None => Err(self.problems.at(
                source.span(),
                "source = \"assume-role\" needs `role_session_name`: add role_session_name = \
                 \"cwp-portwatch\" (CloudAudit shows it beside every call) to [credentials]"
                    .to_owned(),
            )),
        };
        let duration = self.duration(
            raw.duration.as_ref(),
            "duration",
            DEFAULT_DURATION,
            &(std::time::Duration::from_secs(1)..=MAX_DURATION),
        );
        Ok(CredentialSettings::AssumeRole {
            base: Box::new(base?),
            request: RoleRequest {
                role_arn: role_arn?,
                role_session_name: role_session_name?,
                duration: duration?,
            },
        })
    }

    fn profile(&mut self, raw: &RawCredentials) -> Result<CredentialSettings, Reported> {
        let path = match &raw.profile_path {
            Some(value) => Some(self.path(
                value,
                "profile_path",
                "\"/etc/tencentcloud/credentials\"",
                false,
            )?),
            None => None,
        };
        let profile = match &raw.profile {
            Some(value) => self
                .text(value, "profile", "\"default\"", false, MAX_PROFILE_CHARS)?
                .trim()
                .to_owned(),
            None => "default".to_owned(),
        };
        Ok(CredentialSettings::Profile { path, profile })
    }

    fn cvm_role(&mut self, raw: &RawCredentials) -> Result<CredentialSettings, Reported> {
        let role = match &raw.role {
            Some(value) => {
                let role = self
                    .non_empty(value, "role", "\"CwpPortwatchRole\"", false)?
                    .trim();
                if !is_cam_role_name(role) {
                    return Err(self.problems.at(
                        value.span(),
                        format!(
                            "`role` = {} is not a CAM role name: write 1 to 128 letters, digits \
                             and `+=,.@_-` (the role's name in the CAM console, not its ARN), \
                             e.g. role = \"CwpPortwatchRole\"",
                            shown(role)
                        ),
                    ));
                }
                Some(role.to_owned())
            }
            None => None,
        };
        let metadata_endpoint = match &raw.metadata_endpoint {
            Some(value) => {
                self.endpoint(value, "metadata_endpoint", false, DEFAULT_METADATA_ENDPOINT)?
            }
            None => Url::parse(DEFAULT_METADATA_ENDPOINT).expect("default is a URL"),
        };
        Ok(CredentialSettings::CvmRole {
            role,
            metadata_endpoint: with_trailing_slash(metadata_endpoint),
        })
    }

    /// `source = "file"`: both files are required; a missing one is reported at `source`.
    fn files(
        &mut self,
        raw: &RawCredentials,
        source: &Spanned<String>,
    ) -> Result<CredentialSettings, Reported> {
        let mut file = |value: Option<&Spanned<String>>, key: &str| match value {
            Some(value) => self.path(value, key, "\"/path/to/file\"", true),
            None => Err(self.problems.at(
                source.span(),
                format!(
                    "source = \"file\" needs `{key}`: add {key} = \"/path/to/file\" (a file \
                     holding only that value) to [credentials]"
                ),
            )),
        };
        let secret_id_file = file(raw.secret_id_file.as_ref(), "secret_id_file");
        let secret_key_file = file(raw.secret_key_file.as_ref(), "secret_key_file");
        Ok(CredentialSettings::File {
            secret_id_file: secret_id_file?,
            secret_key_file: secret_key_file?,
        })
    }
}

/// The example `role_arn`, for messages.
const ROLE_ARN_EXAMPLE: &str = "\"qcs::cam::uin/100000000001:roleName/cwp-reader\"";

/// [`Check::source`] is never asked for assume-role ([`Check::base`] refuses it as a base);
/// should that change, this reports it instead of panicking.
fn unreachable_assume_role(
    check: &mut Check<'_>,
    source: &Spanned<String>,
) -> Result<CredentialSettings, Reported> {
    Err(check.problems.at(
        source.span(),
        "source = \"assume-role\" cannot be its own base".to_owned(),
    ))
}
