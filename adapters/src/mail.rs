//! Outgoing email: verification codes and password-reset links.
//!
//! A [`Mailer`] is built once from [`MailSettings`] and sends [`OutgoingMail`] through one of
//! two transports:
//!
//! - `folder` (the laptop default): each message is written as an `.eml` file into a local
//!   folder and its path is logged, so a developer can open it without any mail server.
//! - `smtp`: the message goes to a configured relay, in clear text (`none`, for a local relay
//!   or a test server), upgraded with `STARTTLS`, or over implicit TLS (`tls`, port 465).
//!
//! # TLS
//!
//! lettre runs TLS through rustls with the `ring` crypto provider and trusts the operating
//! system's roots (`rustls-native-certs`). Both crates are already in the build through
//! async-nats, so mail adds no second crypto library: lettre's `aws-lc-rs` provider (a C and
//! assembly build of several minutes on two cores) and `native-tls` (OpenSSL headers at build
//! time) are left off, and so is `webpki-roots` (a copy of Mozilla's roots baked into the
//! binary that can only be updated by a rebuild).
//!
//! # Secrets
//!
//! Message bodies carry one-time codes and reset links, and the settings carry the SMTP
//! password: neither is ever logged, and neither appears in a [`MailError`] or a `Debug`.

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

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

    fn sender_mailbox(&self) -> Result<Mailbox, String> {
        self.from.parse::<Mailbox>().map_err(|e| {
            format!("mail.from: not a mailbox like \"Smart AI Hub <no-reply@example.com>\" ({e})")
        })
    }

    fn timeout(&self) -> Duration {
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

/// One message to send.
#[derive(Clone)]
pub struct OutgoingMail {
    /// The recipient, as a bare address or `Name <address>`.
    pub to: String,
    pub subject: String,
    /// The plain-text body. It may carry a secret (a code, a link): never logged.
    pub text: String,
}

impl fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish()
    }
}

/// A message that could not be sent. Its text names the step and the server, never the
/// password or the message.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The mail settings are not valid.
    #[error("invalid mail settings: {0}")]
    Settings(String),
    /// The recipient is not an email address.
    #[error("the recipient is not a valid email address")]
    InvalidRecipient(#[source] lettre::address::AddressError),
    /// The message could not be put together.
    #[error("failed to build the email")]
    Build(#[source] lettre::error::Error),
    /// TLS could not be set up for the SMTP relay.
    #[error("failed to set up TLS for the SMTP server {host}")]
    Tls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// The mail folder could not be created or written.
    #[error("failed to write the email into {}", path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The SMTP server could not be reached, or refused the message.
    #[error("failed to send the email through the SMTP server {host}:{port}")]
    Smtp {
        host: String,
        port: u16,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// The SMTP server did not take the message in time.
    #[error("the SMTP server {host}:{port} did not take the email within {timeout_ms} ms")]
    Timeout {
        host: String,
        port: u16,
        timeout_ms: u64,
    },
}

/// Sends mail through the configured transport. Cheap to clone: the SMTP transport opens
/// one connection per message (mail is rare here, so no pool to keep alive).
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Folder {
        folder: PathBuf,
        files: AsyncFileTransport<Tokio1Executor>,
    },
    Smtp {
        host: String,
        port: u16,
        timeout_ms: u64,
        client: AsyncSmtpTransport<Tokio1Executor>,
    },
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mailer");
        d.field("from", &self.from.to_string());
        match &self.transport {
            Transport::Folder { folder, .. } => d.field("folder", folder),
            Transport::Smtp { host, port, .. } => {
                d.field("smtp_host", host).field("smtp_port", port)
            }
        };
        d.finish()
    }
}

impl Mailer {
    /// Build the mailer; checks the settings first. Nothing is connected or created yet.
    pub fn new(settings: &MailSettings) -> Result<Mailer, MailError> {
        settings.validate().map_err(MailError::Settings)?;
        let from = settings.sender_mailbox().map_err(MailError::Settings)?;
        let transport = match settings.transport {
            MailTransport::Folder => Transport::Folder {
                folder: settings.folder.clone(),
                files: AsyncFileTransport::new(&settings.folder),
            },
            MailTransport::Smtp => Transport::Smtp {
                host: settings.smtp_host.clone(),
                port: settings.smtp_port,
                timeout_ms: settings.timeout_ms,
                client: smtp_client(settings)?,
            },
        };
        Ok(Mailer { from, transport })
    }

    /// Send a plain-text message.
    pub async fn send(&self, message: OutgoingMail) -> Result<(), MailError> {
        let body = SinglePart::plain(message.text);
        let email = self
            .builder(&message.to, message.subject)?
            .singlepart(body)
            .map_err(MailError::Build)?;
        self.deliver(email).await
    }

    /// Send a message with both a plain-text and an HTML body; clients show the one they
    /// prefer. The text should say everything the HTML says.
    pub async fn send_with_html(
        &self,
        message: OutgoingMail,
        html: String,
    ) -> Result<(), MailError> {
        let body = MultiPart::alternative()
            .singlepart(SinglePart::plain(message.text))
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html),
            );
        let email = self
            .builder(&message.to, message.subject)?
            .multipart(body)
            .map_err(MailError::Build)?;
        self.deliver(email).await
    }

    fn builder(
        &self,
        to: &str,
        subject: String,
    ) -> Result<lettre::message::MessageBuilder, MailError> {
        let to = to.parse::<Mailbox>().map_err(MailError::InvalidRecipient)?;
        // The Message-ID names the sender's domain, as RFC 5322 suggests, not this host.
        let message_id = format!("<{}@{}>", Uuid::new_v4().simple(), self.from.email.domain());
        Ok(Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id)))
    }

    async fn deliver(&self, email: Message) -> Result<(), MailError> {
        match &self.transport {
            Transport::Folder { folder, files } => {
                let folder_error =
                    |source: Box<dyn std::error::Error + Send + Sync>| MailError::Folder {
                        path: folder.clone(),
                        source,
                    };
                let to_create = folder.clone();
                tokio::task::spawn_blocking(move || std::fs::create_dir_all(to_create))
                    .await
                    .map_err(|e| folder_error(e.into()))?
                    .map_err(|e| folder_error(e.into()))?;
                let id = files
                    .send(email)
                    .await
                    .map_err(|e| folder_error(e.into()))?;
                let path = folder.join(format!("{id}.eml"));
                // The path only: the body carries a code or a link.
                tracing::info!(path = %path.display(), "email written to the mail folder");
                Ok(())
            }
            Transport::Smtp {
                host,
                port,
                timeout_ms,
                client,
            } => {
                let deadline = Duration::from_millis(*timeout_ms);
                match tokio::time::timeout(deadline, client.send(email)).await {
                    Ok(Ok(response)) => {
                        tracing::info!(
                            smtp_host = %host,
                            smtp_port = port,
                            code = %response.code(),
                            "email handed to the SMTP server"
                        );
                        Ok(())
                    }
                    Ok(Err(source)) => Err(MailError::Smtp {
                        host: host.clone(),
                        port: *port,
                        source,
                    }),
                    Err(_) => Err(MailError::Timeout {
                        host: host.clone(),
                        port: *port,
                        timeout_ms: *timeout_ms,
                    }),
                }
            }
        }
    }
}

/// The SMTP client for `settings`, with every option set explicitly.
fn smtp_client(settings: &MailSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let host = settings.smtp_host.clone();
    let tls = match settings.smtp_tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(tls_parameters(&host)?),
        SmtpTls::Tls => Tls::Wrapper(tls_parameters(&host)?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(settings.smtp_port)
        .tls(tls)
        // lettre applies this to the connection and to each command; `deliver` bounds the
        // whole send by the same value.
        .timeout(Some(settings.timeout()));
    if let (Some(user), Some(password)) = (&settings.smtp_username, &settings.smtp_password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

fn tls_parameters(host: &str) -> Result<TlsParameters, MailError> {
    TlsParameters::builder(host.to_owned())
        .build_rustls()
        .map_err(|source| MailError::Tls {
            host: host.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp_settings() -> MailSettings {
        MailSettings {
            transport: MailTransport::Smtp,
            smtp_host: "smtp.example.com".into(),
            smtp_username: Some("hub".into()),
            smtp_password: Some("p4ssw0rd-secret".into()),
            ..MailSettings::default()
        }
    }

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
    fn debug_redacts_the_password_and_errors_never_show_it() {
        let settings = smtp_settings();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("p4ssw0rd-secret"), "{debug}");
        assert!(debug.contains("<redacted>"));

        let mailer = Mailer::new(&settings).expect("builds");
        assert!(!format!("{mailer:?}").contains("p4ssw0rd-secret"));

        let bad = MailSettings {
            smtp_tls: SmtpTls::None,
            ..smtp_settings()
        };
        let error = Mailer::new(&bad).expect_err("refused");
        assert!(matches!(error, MailError::Settings(_)));
        assert!(!error.to_string().contains("p4ssw0rd-secret"));
        assert!(!format!("{error:?}").contains("p4ssw0rd-secret"));
    }

    #[test]
    fn outgoing_mail_debug_hides_the_body() {
        let mail = OutgoingMail {
            to: "a@example.com".into(),
            subject: "Your code".into(),
            text: "code 123456".into(),
        };
        assert!(!format!("{mail:?}").contains("123456"));
    }

    /// A fresh folder under the system temp dir, removed when dropped.
    struct TempFolder(PathBuf);

    impl TempFolder {
        fn new() -> Self {
            Self(std::env::temp_dir().join(format!("aihub-mail-{}", Uuid::new_v4())))
        }
    }

    impl Drop for TempFolder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn eml_files(folder: &std::path::Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
            .expect("the folder exists")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
            .collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn the_folder_transport_creates_the_folder_and_writes_one_eml_per_message() {
        let temp = TempFolder::new();
        let folder = temp.0.join("nested").join("mail");
        let mailer = Mailer::new(&MailSettings {
            folder: folder.clone(),
            ..MailSettings::default()
        })
        .expect("builds");

        mailer
            .send(OutgoingMail {
                to: "Ada <ada@example.com>".into(),
                subject: "Verify your email".into(),
                text: "Your code is 123456.\r\n".into(),
            })
            .await
            .expect("written");
        mailer
            .send_with_html(
                OutgoingMail {
                    to: "bob@example.com".into(),
                    subject: "Reset your password".into(),
                    text: "Open https://hub.example/reset?token=abc".into(),
                },
                "<p><a href=\"https://hub.example/reset?token=abc\">Reset</a></p>".into(),
            )
            .await
            .expect("written");

        let files = eml_files(&folder);
        assert_eq!(files.len(), 2);
        let contents: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("readable"))
            .collect();
        let verify = contents
            .iter()
            .find(|c| c.contains("Subject: Verify your email"))
            .expect("the verification message");
        assert!(
            verify.contains("To: \"Ada\" <ada@example.com>")
                || verify.contains("To: Ada <ada@example.com>")
        );
        assert!(
            verify.contains("From: \"Smart AI Hub\" <no-reply@localhost>")
                || verify.contains("From: Smart AI Hub <no-reply@localhost>"),
            "{verify}"
        );
        assert!(verify.contains("Message-ID: <") && verify.contains("@localhost>"));
        assert!(verify.contains("Your code is 123456."));
        let reset = contents
            .iter()
            .find(|c| c.contains("Subject: Reset your password"))
            .expect("the reset message");
        assert!(reset.contains("multipart/alternative"));
        assert!(reset.contains("text/html"));
    }

    #[tokio::test]
    async fn an_invalid_recipient_is_refused_without_writing_anything() {
        let temp = TempFolder::new();
        let mailer = Mailer::new(&MailSettings {
            folder: temp.0.clone(),
            ..MailSettings::default()
        })
        .expect("builds");
        let error = mailer
            .send(OutgoingMail {
                to: "not an address".into(),
                subject: "x".into(),
                text: "secret 654321".into(),
            })
            .await
            .expect_err("refused");
        assert!(matches!(error, MailError::InvalidRecipient(_)));
        assert!(!error.to_string().contains("654321"));
        assert!(!temp.0.exists());
    }

    #[tokio::test]
    async fn a_folder_that_cannot_be_created_gives_a_folder_error() {
        let temp = TempFolder::new();
        std::fs::create_dir_all(&temp.0).expect("temp dir");
        // A file where the folder should be.
        let blocker = temp.0.join("blocker");
        std::fs::write(&blocker, b"x").expect("write");
        let mailer = Mailer::new(&MailSettings {
            folder: blocker.join("mail"),
            ..MailSettings::default()
        })
        .expect("builds");
        let error = mailer
            .send(OutgoingMail {
                to: "a@example.com".into(),
                subject: "x".into(),
                text: "secret 654321".into(),
            })
            .await
            .expect_err("fails");
        assert!(matches!(error, MailError::Folder { .. }), "{error:?}");
        assert!(!format!("{error:?}").contains("654321"));
    }
}
