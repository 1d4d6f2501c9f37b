//! The `[credentials]` section: `source` picks a [`CredentialSettings`] variant, and each
//! source accepts only its own keys, so a key meant for another source is reported instead of
//! silently ignored.

use reqwest::Url;
use toml::Spanned;

use super::Check;
use crate::config::raw::RawCredentials;
use crate::credentials::{
    CredentialSettings, DEFAULT_METADATA_ENDPOINT, SourceKind, is_cam_role_name,
};
use crate::endpoint::with_trailing_slash;
use crate::problems::{Reported, shown};

/// The longest profile (section) name accepted, in characters: it is printed in messages.
const MAX_PROFILE_CHARS: usize = 256;

/// How the operator may spell `source`, for messages.
const SOURCES: &str = "\"env\", \"systemd\", \"profile\", \"cvm-role\" or \"file\"";

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
        // Which keys each source uses; any other key present is a mistake worth reporting.
        let keys: [(&str, Option<&Spanned<String>>, SourceKind); 6] = [
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
        ];
        let mut misplaced = None;
        for (key, value, used_by) in keys {
            if let Some(value) = value
                && used_by != kind
            {
                misplaced = Some(self.problems.at(
                    value.span(),
                    format!(
                        "`{key}` applies only to source = \"{}\", but source = \"{}\"; remove the \
                         line or change `source`",
                        used_by.name(),
                        kind.name()
                    ),
                ));
            }
        }
        let settings = match kind {
            SourceKind::Env => Ok(CredentialSettings::Env),
            SourceKind::Systemd => Ok(CredentialSettings::Systemd),
            SourceKind::Profile => self.profile(raw),
            SourceKind::CvmRole => self.cvm_role(raw),
            SourceKind::File => self.files(raw, source),
        };
        match misplaced {
            Some(reported) => Err(reported),
            None => settings,
        }
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
