//! The `[mail]` settings: which transport, the SMTP relay and its protection, the sender, the
//! timeout; and the checks made on them at start-up.

use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The longest an SMTP send may be given. A request waiting on mail must not hang for
/// longer than a client would wait for its answer.
pub const TIMEOUT_MS_MAX: u64 = 300_000;

/// Where the mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// Write each message as an `.eml` file into [`MailSettings::folder`].
    Folder,
    /// Send each message to [`MailSettings::smtp_host`].
    Smtp,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Clear text: only for a relay on this machine or a test server.
    None,
    /// Connect in clear text, then require `STARTTLS` before anything else (port 587).
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

/// The `[mail]` settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// `folder` (the default) or `smtp`.
    pub transport: MailTransport,
    /// Where the folder transport writes its `.eml` files; created if missing.
    pub folder: PathBuf,
    /// The SMTP relay's host name; with TLS it is also the name its certificate must carry.
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: SmtpTls,
    /// Set together with `smtp_password`, or neither.
    pub smtp_username: Option<String>,
    /// A secret: redacted from `Debug`, never logged.
    pub smtp_password: Option<String>,
    /// The `From` of every message, as `Name <address>` or a bare address.
    pub from: String,
    /// The longest one SMTP send may take, connection included, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            transport: MailTransport::Folder,
            folder: PathBuf::from("./var/mail"),
            smtp_host: "localhost".into(),
            smtp_port: 587,
            smtp_tls: SmtpTls::Starttls,
            smtp_username: None,
            smtp_password: None,
            from: "Smart AI Hub <no-reply@localhost>".into(),
            timeout_ms: 10_000,
        }
    }
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("transport", &self.transport)
            .field("folder", &self.folder)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_tls", &self.smtp_tls)
            .field("smtp_username", &self.smtp_username)
            .field(
                "smtp_password",
                &self.smtp_password.as_ref().map(|_| "<redacted>"),
            )
            .field("from", &self.from)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl MailSettings {
    /// Check the settings; the error names the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        self.sender_mailbox()?;
        if self.timeout_ms == 0 || self.timeout_ms > TIMEOUT_MS_MAX {
            return Err(format!(
                "mail.timeout_ms: must be between 1 and {TIMEOUT_MS_MAX}"
            ));
        }
        match self.transport {
            MailTransport::Folder => {
                if self.folder.as_os_str().is_empty() {
                    return Err(
                        "mail.folder: must not be empty when mail.transport is \"folder\"".into(),
                    );
                }
            }
            MailTransport::Smtp => self.validate_smtp()?,
        }
        Ok(())
    }

    fn validate_smtp(&self) -> Result<(), String> {
        let host = self.smtp_host.as_str();
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
            return Err("mail.smtp_host: must be a host name or an IP address".into());
        }
        if self.smtp_port == 0 {
            return Err("mail.smtp_port: must be between 1 and 65535".into());
        }
        match (&self.smtp_username, &self.smtp_password) {
            (Some(user), _) if user.is_empty() => {
                return Err("mail.smtp_username: must not be empty when set".into());
            }
            (Some(_), None) => {
                return Err("mail.smtp_password: required when mail.smtp_username is set".into());
            }
            (None, Some(_)) => {
                return Err("mail.smtp_password: set without mail.smtp_username".into());
            }
            (Some(_), Some(_)) if self.smtp_tls == SmtpTls::None && !is_loopback(host) => {
                return Err(format!(
                    "mail.smtp_tls: \"none\" would send the SMTP password to {host} in clear \
                     text; use \"starttls\" or \"tls\""
                ));
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn sender_mailbox(&self) -> Result<Mailbox, String> {
        self.from.parse::<Mailbox>().map_err(|e| {
            format!("mail.from: not a mailbox like \"Smart AI Hub <no-reply@example.com>\" ({e})")
        })
    }

    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Whether a password sent to `host` in clear text stays on this machine.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::test_support::smtp_settings;

    fn rejected_field(settings: &MailSettings) -> String {
        let message = settings.validate().expect_err("the settings are refused");
        message
            .split(':')
            .next()
            .expect("the message names a field")
            .to_owned()
    }

    #[test]
    fn the_default_settings_are_valid_and_write_to_a_folder() {
        let settings = MailSettings::default();
        settings.validate().expect("defaults are valid");
        assert_eq!(settings.transport, MailTransport::Folder);
        assert_eq!(settings.folder, PathBuf::from("./var/mail"));
    }

    #[test]
    fn smtp_settings_with_starttls_and_credentials_are_valid() {
        smtp_settings().validate().expect("valid");
    }

    #[test]
    fn settings_deserialize_from_lowercase_names_and_refuse_unknown_fields() {
        let settings: MailSettings = serde_json::from_value(serde_json::json!({
            "transport": "smtp", "smtp_tls": "tls", "smtp_port": 465
        }))
        .expect("deserializes");
        assert_eq!(settings.transport, MailTransport::Smtp);
        assert_eq!(settings.smtp_tls, SmtpTls::Tls);
        assert_eq!(settings.from, MailSettings::default().from);

        let unknown =
            serde_json::from_value::<MailSettings>(serde_json::json!({ "smtp_pass": "x" }));
        assert!(unknown.is_err());
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        type Tweak = Box<dyn Fn(&mut MailSettings)>;
        let cases: Vec<(&str, Tweak)> = vec![
            ("mail.from", Box::new(|s| s.from = "not an address".into())),
            ("mail.timeout_ms", Box::new(|s| s.timeout_ms = 0)),
            (
                "mail.timeout_ms",
                Box::new(|s| s.timeout_ms = TIMEOUT_MS_MAX + 1),
            ),
            ("mail.smtp_host", Box::new(|s| s.smtp_host = String::new())),
            (
                "mail.smtp_host",
                Box::new(|s| s.smtp_host = "smtp://x".into()),
            ),
            ("mail.smtp_port", Box::new(|s| s.smtp_port = 0)),
            ("mail.smtp_password", Box::new(|s| s.smtp_password = None)),
            ("mail.smtp_password", Box::new(|s| s.smtp_username = None)),
            (
                "mail.smtp_username",
                Box::new(|s| s.smtp_username = Some(String::new())),
            ),
            ("mail.smtp_tls", Box::new(|s| s.smtp_tls = SmtpTls::None)),
        ];
        for (field, tweak) in cases {
            let mut settings = smtp_settings();
            tweak(&mut settings);
            assert_eq!(rejected_field(&settings), field, "{settings:?}");
        }

        let folder = MailSettings {
            folder: PathBuf::new(),
            ..MailSettings::default()
        };
        assert_eq!(rejected_field(&folder), "mail.folder");
    }

    #[test]
    fn a_clear_text_password_is_allowed_only_to_this_machine() {
        for host in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            let settings = MailSettings {
                smtp_host: host.into(),
                smtp_tls: SmtpTls::None,
                ..smtp_settings()
            };
            settings.validate().expect("loopback is fine");
        }
    }

    #[test]
    fn smtp_settings_are_ignored_by_the_folder_transport() {
        let settings = MailSettings {
            smtp_port: 0,
            smtp_host: String::new(),
            ..MailSettings::default()
        };
        settings.validate().expect("valid");
    }

    #[test]
    fn debug_redacts_the_password() {
        let debug = format!("{:?}", smtp_settings());
        assert!(!debug.contains("p4ssw0rd-secret"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }
}
