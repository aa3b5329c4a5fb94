//! One outgoing message, and how it becomes an email: sender, recipient, subject, a
//! `Message-ID` in the sender's domain, a plain-text body or text and HTML alternatives.

use super::{MailError, Mailer};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use std::fmt;
use uuid::Uuid;

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

impl Mailer {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::test_support::TempFolder;
    use crate::mail::MailSettings;

    #[test]
    fn outgoing_mail_debug_hides_the_body() {
        let mail = OutgoingMail {
            to: "a@example.com".into(),
            subject: "Your code".into(),
            text: "code 123456".into(),
        };
        assert!(!format!("{mail:?}").contains("123456"));
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
}
