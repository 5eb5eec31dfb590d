//! Chat templates rendered as the inference servers do: the Jinja template stored in the
//! GGUF file (`tokenizer.chat_template`), run by `minijinja` with Python-compatible string
//! methods, `trim_blocks` and `lstrip_blocks` (as Hugging Face's renderer sets them).

use minijinja::{Environment, Error, ErrorKind, Value};

/// One chat message.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// `system`, `user` or `assistant`.
    pub role: &'a str,
    /// The text.
    pub content: &'a str,
}

/// Renders `messages` through the Jinja `template`; with `add_generation_prompt` the
/// assistant's turn is opened at the end. `bos` and `eos` are the model's special-token
/// texts, which templates may print.
pub fn render_chat(
    template: &str,
    messages: &[Message<'_>],
    add_generation_prompt: bool,
    bos: &str,
    eos: &str,
) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    // Some templates print today's date; a fixed one keeps renders reproducible.
    env.add_function("strftime_now", |_fmt: String| "26 Jul 2024".to_string());
    env.add_template("chat", template)
        .map_err(|e| format!("the template does not parse: {e}"))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| format!("the template does not parse: {e}"))?;
    let msgs: Vec<Value> = messages
        .iter()
        .map(|m| minijinja::context! { role => m.role, content => m.content })
        .collect();
    tmpl.render(minijinja::context! {
        messages => msgs,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| format!("rendering failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    fn user(content: &str) -> [Message<'_>; 1] {
        [Message {
            role: "user",
            content,
        }]
    }

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let got = render_chat(CHATML, &user("Hi"), true, "", "").unwrap();
        assert_eq!(
            got,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let got = render_chat(CHATML, &user("Hi"), false, "", "").unwrap();
        assert_eq!(got, "<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn python_string_methods_bos_and_block_trimming() {
        // trim_blocks drops the newline after a block tag, lstrip_blocks the spaces before
        // one; spaces before an expression stay (as in Jinja).
        let t = "{{ bos_token }}{% for m in messages %}\n  {{ m.content.strip() | upper }}\n  {% endfor %}";
        assert_eq!(
            render_chat(t, &user("  hi "), true, "<s>", "").unwrap(),
            "<s>  HI\n"
        );
    }

    #[test]
    fn raise_exception_and_syntax_errors_are_errors() {
        let t = "{{ raise_exception('only user and assistant roles') }}";
        let e = render_chat(t, &user("x"), true, "", "").unwrap_err();
        assert!(e.contains("only user and assistant roles"), "{e}");
        assert!(render_chat("{% for %}", &user("x"), true, "", "").is_err());
    }
}
