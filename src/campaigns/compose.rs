//! One campaign mail for one recipient: the recipient's fields and the builtins rendered by the
//! campaign's templates, the open pixel and tracking links, the headers (`smtp::build`). The
//! sender workers and the benchmark's plain-client baseline make their mails here.

use std::sync::Arc;

use lettre::message::Mailbox;
use serde_json::{Map, Value};

use super::records::{Definition, SendRequest};
use super::smtp::{self, MailParts};
use super::template::{with_pixel, Templates};
use super::tracking::{Links, TokenKind};

/// A campaign compiled once: its templates, sender and name.
pub struct CampaignMail {
    templates: Templates,
    pub from: Mailbox,
    pub name: String,
    campaign_id: String,
    links: Arc<Links>,
}

impl CampaignMail {
    pub fn compile(def: &Definition, links: Arc<Links>) -> Result<Self, String> {
        let templates = Templates::compile(&def.subject, def.html_template.as_deref(), def.text_template.as_deref(), Some(links.clone()))?;
        let from: Mailbox = def.sender.parse().map_err(|e| format!("sender {:?}: {e}", def.sender))?;
        Ok(CampaignMail { templates, from, name: def.name.clone(), campaign_id: def.campaign_id.clone(), links })
    }

    /// The mail for `r` and its Message-ID, or why it cannot be made (a missing field, …).
    pub fn compose(&self, r: &SendRequest) -> Result<(lettre::Message, String), String> {
        let unsubscribe = self.links.url(TokenKind::Unsubscribe, &self.campaign_id, &r.recipient_id, None);
        let mut ctx: Map<String, Value> = serde_json::from_str(&r.fields).map_err(|e| format!("recipient fields are not a JSON object: {e}"))?;
        ctx.insert("campaign_id".into(), self.campaign_id.clone().into());
        ctx.insert("campaign_name".into(), self.name.clone().into());
        ctx.insert("recipient_id".into(), r.recipient_id.clone().into());
        ctx.insert("email".into(), r.email.clone().into());
        ctx.insert("unsubscribe_url".into(), unsubscribe.clone().into());
        let mut rendered = self.templates.render(&ctx)?;
        if let Some(h) = rendered.html.take() {
            rendered.html = Some(with_pixel(&h, &self.links.url(TokenKind::Open, &self.campaign_id, &r.recipient_id, None)));
        }
        let message_id = smtp::message_id(&self.campaign_id, &r.recipient_id, &self.from);
        let message = smtp::build(MailParts {
            from: &self.from,
            to: &r.email,
            rendered,
            message_id: message_id.clone(),
            campaign_id: &self.campaign_id,
            campaign_name: &self.name,
            recipient_id: &r.recipient_id,
            unsubscribe_url: Some(unsubscribe),
        })?;
        Ok((message, message_id))
    }
}
