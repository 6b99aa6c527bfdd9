//! Templates: any source is accepted or refused with a message, never a stack overflow, and
//! rendering never panics.

use super::*;
use signet::policy::templates;

/// Template source built from minijinja's syntax, the known variables and filters.
pub(crate) fn template_like() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "{{",
        "}}",
        "{%",
        "%}",
        "{#",
        "#}",
        " ",
        "if",
        "else",
        "endif",
        "for",
        "in",
        "endfor",
        "set",
        "=",
        "x",
        "signer_name",
        "deadline",
        "unknown",
        "|",
        "default",
        "upper",
        "(",
        ")",
        "'",
        "\"",
        ",",
        ".",
        "[",
        "]",
        "1",
        "~",
        "+",
        "-",
        "{%-",
        "-%}",
        "raw",
        "endraw",
        "macro",
        "endmacro",
        "call",
        "include",
        "block",
        "extends",
        "loop",
        "\n",
        "é",
    ]);
    proptest::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn template_check_never_panics(source in prop_oneof![any::<String>(), template_like()]) {
        if let Err(message) = templates::check(&source) {
            prop_assert!(!message.is_empty());
        }
    }

    #[test]
    fn deep_templates_are_refused_not_overflowing(
        depth in 1usize..5_000,
        level in prop::sample::select(vec!["(", "[", "{", "not ", "-", "x + ", "x and ", "x|upper", "x.a", "x[0]"]),
        closed in any::<bool>(),
    ) {
        let end = if closed { " }}" } else { "" };
        let source = format!("{{{{ {}signer_name{end}", level.repeat(depth));
        // What the guard counts: the tag's characters besides spaces (there are no strings).
        let significant = depth * level.replace(' ', "").len() + "signer_name".len();
        let too_long = "a tag may hold at most 256 characters";
        match templates::check(&source) {
            Err(message) if significant > 256 => prop_assert!(message.contains(too_long), "{}", message),
            Ok(()) if significant > 256 => prop_assert!(false, "{} significant characters accepted", significant),
            Err(message) => prop_assert!(!message.contains(too_long) && !message.is_empty(), "{}", message),
            Ok(()) => {}
        }
    }
}

/// What a template sees, with markup and quotes in the values.
fn context() -> templates::TemplateContext {
    templates::TemplateContext {
        workflow_id: "7f1c".into(),
        workflow_type: "enrollment-agreement".into(),
        signer_name: Some("Ada <b>\"&'".into()),
        signer_email: "ada@example.com".into(),
        document_title: None,
        signing_url: Some("https://sign.example.com/x?a=1&b=2".into()),
        requested_at: "2026-03-27 09:00 CET".into(),
        deadline: None,
        reminder_number: 2,
        max_reminders: 3,
        kind: "reminder",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn templates_that_pass_the_check_build_a_renderer_and_render_without_panicking(
        source in template_like(),
    ) {
        prop_assume!(templates::check(&source).is_ok());
        let mut spec = full_spec();
        let template = spec.reminders.as_mut().and_then(|r| r.template.as_mut()).expect("the example has one");
        template.subject = Some(source.clone());
        template.text = Some(source.clone());
        template.html = Some(source);
        let renderer = templates::Renderer::new(&spec).map_err(TestCaseError::fail)?;
        // Rendering may fail (a filter on the wrong type), but with a message, and in bounded time.
        let rendered = within(StdDuration::from_secs(20), move || {
            renderer.render(signet::policy::NoticeKind::Reminder, &context())
        });
        if let Err(message) = rendered {
            prop_assert!(message.starts_with("template reminder."), "{}", message);
        }
    }
}
