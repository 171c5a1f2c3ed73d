//! Per-recipient rendering with minijinja: the subject and text as plain text, the HTML
//! auto-escaped (a `<` in a profile field cannot become markup). Undefined variables are
//! errors (strict), so a template naming a field the audience does not have is refused at
//! submit time, and a recipient missing a field fails alone instead of getting a half-rendered
//! mail. `{{ track("https://…") }}` makes a tracked link; the open pixel is added to the HTML.

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use super::tracking::{Links, TokenKind};

const SUBJECT: &str = "subject.txt";
const HTML: &str = "body.html";
const TEXT: &str = "body.txt";

/// What every template may use besides the recipient's fields.
pub const BUILTINS: &[&str] = &["campaign_id", "campaign_name", "recipient_id", "email", "unsubscribe_url", "track"];

/// The fields of a customer-360 recipient (gold c360).
pub const C360_FIELDS: &[&str] = &[
    "customer_id", "first_name", "last_name", "city", "state", "order_count", "revenue", "avg_order_value", "first_order_at", "last_order_at",
    "favourite_category", "review_avg", "lifecycle_stage", "segment",
];

/// A campaign's compiled templates.
pub struct Templates {
    env: Environment<'static>,
    has_html: bool,
    has_text: bool,
}

/// A rendered mail body.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
}

impl Templates {
    /// Compile; a syntax error names the part (subject, html, text) and the line.
    pub fn compile(subject: &str, html: Option<&str>, text: Option<&str>, links: Option<Arc<Links>>) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        let add = |env: &mut Environment<'static>, name: &'static str, src: &str| env.add_template_owned(name, src.to_string()).map_err(|e| format!("{}: {e}", part(name)));
        add(&mut env, SUBJECT, subject)?;
        if let Some(h) = html {
            add(&mut env, HTML, h)?;
        }
        if let Some(t) = text {
            add(&mut env, TEXT, t)?;
        }
        // track(url): the recipient's signed click link (the plain URL when tracking is off,
        // as in a test send without a public URL).
        // The link is marked safe: it is made of the base URL and a base64url token, and
        // escaping its slashes (&#x2f;) would break it in an href.
        env.add_function("track", move |state: &minijinja::State, url: String| -> Result<minijinja::Value, minijinja::Error> {
            let Some(links) = &links else { return Ok(minijinja::Value::from(url)) };
            let get = |n: &str| state.lookup(n).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            Ok(minijinja::Value::from_safe_string(links.url(TokenKind::Click, &get("campaign_id"), &get("recipient_id"), Some(&url))))
        });
        Ok(Templates { env, has_html: html.is_some(), has_text: text.is_some() })
    }

    /// Every variable the templates read (besides the builtins), sorted.
    pub fn fields(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for name in [SUBJECT, HTML, TEXT] {
            if let Ok(t) = self.env.get_template(name) {
                out.extend(t.undeclared_variables(false).into_iter().filter(|v| !BUILTINS.contains(&v.as_str())));
            }
        }
        out.into_iter().collect()
    }

    /// Render for one recipient. `context` holds the recipient's fields and the builtins; a
    /// null field counts as missing.
    pub fn render(&self, context: &Map<String, Value>) -> Result<Rendered, String> {
        let ctx: Map<String, Value> = context.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let render = |name: &str| -> Result<String, String> {
            let t = self.env.get_template(name).map_err(|e| e.to_string())?;
            t.render(&ctx).map_err(|e| match e.kind() {
                minijinja::ErrorKind::UndefinedError => format!("{}: {}", part(name), missing_field(&e, &ctx, &self.fields())),
                _ => format!("{}: {e}", part(name)),
            })
        };
        let subject = render(SUBJECT)?.trim().replace(['\r', '\n'], " ");
        Ok(Rendered { subject, html: if self.has_html { Some(render(HTML)?) } else { None }, text: if self.has_text { Some(render(TEXT)?) } else { None } })
    }
}

fn part(name: &str) -> &'static str {
    match name {
        SUBJECT => "subject",
        HTML => "html",
        _ => "text",
    }
}

/// The field an undefined-variable error is about: the first field the templates read that
/// the context lacks (minijinja's message names the line, not the variable).
fn missing_field(e: &minijinja::Error, ctx: &Map<String, Value>, fields: &[String]) -> String {
    match fields.iter().find(|f| !ctx.contains_key(f.as_str())) {
        Some(f) => format!("missing field {f}"),
        None => format!("undefined value ({e})"),
    }
}

/// Put the open pixel just before `</body>`, or at the end.
pub fn with_pixel(html: &str, pixel_url: &str) -> String {
    let img = format!("<img src=\"{pixel_url}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">");
    match html.rfind("</body>") {
        Some(i) => format!("{}{img}{}", &html[..i], &html[i..]),
        None => format!("{html}{img}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let t = Templates::compile("Hi {{ first_name }}", Some("<p>{{ first_name }} from {{ city }}</p>"), Some("{{ first_name }} from {{ city }}"), None).unwrap();
        assert_eq!(t.fields(), vec!["city", "first_name"]);
        let r = t.render(&ctx(json!({"first_name": "<b>Ana</b>", "city": "São Paulo"}))).unwrap();
        assert_eq!(r.subject, "Hi <b>Ana</b>");
        assert_eq!(r.html.unwrap(), "<p>&lt;b&gt;Ana&lt;&#x2f;b&gt; from São Paulo</p>");
        assert_eq!(r.text.unwrap(), "<b>Ana</b> from São Paulo");
    }

    #[test]
    fn tracked_links_stay_intact_in_html() {
        let links = Arc::new(Links::new(&[1u8; 32], "https://t.example").unwrap());
        let t = Templates::compile("s", Some("<a href=\"{{ track('https://shop.example/a?b=1&c=2') }}\">x</a>"), None, Some(links.clone())).unwrap();
        let html = t.render(&ctx(json!({"campaign_id": "c1", "recipient_id": "r1"}))).unwrap().html.unwrap();
        let url = html.trim_start_matches("<a href=\"").split('"').next().unwrap();
        let token = url.strip_prefix("https://t.example/t/c/").unwrap();
        assert_eq!(links.verify(TokenKind::Click, token).unwrap().u.as_deref(), Some("https://shop.example/a?b=1&c=2"));
    }

    #[test]
    fn a_missing_or_null_field_fails_with_its_name() {
        let t = Templates::compile("Hi", None, Some("{{ city }} / {{ first_name }}"), None).unwrap();
        let e = t.render(&ctx(json!({"city": "Recife", "first_name": null}))).unwrap_err();
        assert_eq!(e, "text: missing field first_name");
    }

    #[test]
    fn a_syntax_error_names_the_part() {
        let e = Templates::compile("Hi {{", None, Some("x"), None).err().unwrap();
        assert!(e.starts_with("subject: "), "{e}");
    }
}
