//! Every way sending a message fails; none of them shows the SMTP password or the message.

use std::path::PathBuf;

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
