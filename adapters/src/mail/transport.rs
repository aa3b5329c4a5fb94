//! The [`Mailer`] and its two transports: `.eml` files in a folder, or an SMTP relay (clear
//! text, `STARTTLS` or implicit TLS, through rustls), each send bounded by the timeout.

use super::{MailError, MailSettings, MailTransport, SmtpTls};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Sends mail through the configured transport. Cheap to clone: the SMTP transport opens
/// one connection per message (mail is rare here, so no pool to keep alive).
#[derive(Clone)]
pub struct Mailer {
    pub(super) from: Mailbox,
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

    pub(super) async fn deliver(&self, email: Message) -> Result<(), MailError> {
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
    use crate::mail::test_support::smtp_settings;
    use crate::mail::test_support::{eml_files, TempFolder};
    use crate::mail::OutgoingMail;

    #[test]
    fn neither_the_mailer_nor_its_errors_show_the_password() {
        let mailer = Mailer::new(&smtp_settings()).expect("builds");
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
