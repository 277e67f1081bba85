//! `http:`: the listen address, and authentication that is whole (a
//! username with a password) and present wherever the page is reachable
//! from another machine.

use super::{At, Validator};
use crate::config::http::{parse_listen, HttpConfig};

pub(super) fn validate_http(v: &Validator, at: &At, h: &HttpConfig) {
    let auth = at.key("auth");
    let a = &h.auth;
    v.secret_keys(
        &auth,
        "token",
        [
            a.token.is_some(),
            a.token_file.is_some(),
            a.token_command.is_some(),
        ],
        false,
    );
    let password = [
        a.password.is_some(),
        a.password_file.is_some(),
        a.password_command.is_some(),
    ];
    v.secret_keys(&auth, "password", password, false);
    let has_password = password.iter().any(|b| *b);
    match &a.username {
        Some(u) if u.is_empty() || u.contains(':') => v.err(
            &auth.key("username"),
            "a username must not be empty nor contain ':' (basic auth splits on it)",
        ),
        Some(_) if !has_password => v.err(
            &auth.key("username"),
            "basic auth needs a password (password, password_file or password_command)",
        ),
        None if has_password => v.err(
            &auth.key("password"),
            "basic auth needs a username beside the password",
        ),
        _ => {}
    }
    let Some(listen) = &h.listen else {
        return;
    };
    match parse_listen(listen) {
        Err(e) => v.err(&at.key("listen"), e),
        Ok(addr) if !addr.ip().is_loopback() && !a.is_set() => v.err(
            &at.key("listen"),
            format!(
                "'{listen}' is reachable from other machines: set http.auth (a token, or \
                 username and password) or listen on 127.0.0.1 / [::1]"
            ),
        ),
        Ok(_) => {}
    }
}
