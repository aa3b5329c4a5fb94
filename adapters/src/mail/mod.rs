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
//!
//! # Layout
//!
//! - [`settings`]: [`MailSettings`] (the `[mail]` section), [`MailTransport`], [`SmtpTls`].
//! - [`message`]: [`OutgoingMail`] and how it becomes an email (headers, text and HTML bodies).
//! - [`transport`]: [`Mailer`], the folder and SMTP transports and their TLS.
//! - [`error`]: [`MailError`], every way a send fails.

pub mod error;
pub mod message;
pub mod settings;
pub mod transport;

pub use error::MailError;
pub use message::OutgoingMail;
pub use settings::{MailSettings, MailTransport, SmtpTls, TIMEOUT_MS_MAX};
pub use transport::Mailer;

/// Helpers shared by the tests of every part.
#[cfg(test)]
mod test_support {
    use std::path::PathBuf;
    use uuid::Uuid;

    /// A fresh folder under the system temp dir, removed when dropped.
    pub(super) struct TempFolder(pub(super) PathBuf);

    impl TempFolder {
        pub(super) fn new() -> Self {
            Self(std::env::temp_dir().join(format!("aihub-mail-{}", Uuid::new_v4())))
        }
    }

    impl Drop for TempFolder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// SMTP settings with a username and a password, for the tests that check the password
    /// never shows.
    pub(super) fn smtp_settings() -> super::MailSettings {
        super::MailSettings {
            transport: super::MailTransport::Smtp,
            smtp_host: "smtp.example.com".into(),
            smtp_username: Some("hub".into()),
            smtp_password: Some("p4ssw0rd-secret".into()),
            ..super::MailSettings::default()
        }
    }

    pub(super) fn eml_files(folder: &std::path::Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
            .expect("the folder exists")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
            .collect();
        files.sort();
        files
    }
}
