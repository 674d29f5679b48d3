//! Signing in with an admin key, and signing out.

use std::time::Instant;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;

use crate::console::error::PageError;
use crate::console::layout::{Nav, page};
use crate::console::session::{Session, clear_cookie, set_cookie};
use crate::console::{Console, FORM_LIMIT, read_in_time};
use crate::http::auth::{Refusal, client_of};

pub async fn form() -> Markup {
    login_page(None)
}

fn login_page(problem: Option<&str>) -> Markup {
    let body = html! {
        div.login {
            @if let Some(problem) = problem {
                p.error role="alert" { (problem) }
            }
            p { "Sign in with an admin key (the one " code { "scripts/start.sh" }
                " printed, also in " code { ".data/admin-key" } ")." }
            form method="post" action="/console/login" {
                label for="admin_key" { "Admin key"
                    input #admin_key type="password" name="admin_key" required
                        autocomplete="current-password" autofocus;
                }
                button type="submit" { "Sign in" }
            }
        }
    };
    page("Sign in", Nav::None, None, body)
}

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    admin_key: String,
}

/// Checks the key exactly as the bearer auth does (same keys, same
/// failure limit per address); on success starts a session and sets its
/// cookie.
pub async fn submit(
    Extension(console): Extension<Console>,
    req: Request,
) -> Result<Response, PageError> {
    let client = client_of(&req);
    let req = read_in_time(req, FORM_LIMIT, console.body_read_timeout).await?;
    let Form(sign_in) = Form::<SignIn>::from_request(req, &())
        .await
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let key = sign_in.admin_key.trim();
    if let Err(refusal) = console.admin.admit(client, Ok(key), Instant::now()) {
        let (status, problem) = match refusal {
            Refusal::Missing => (StatusCode::BAD_REQUEST, "Enter an admin key.".to_owned()),
            Refusal::Invalid => (
                StatusCode::UNAUTHORIZED,
                "That key is not valid.".to_owned(),
            ),
            Refusal::TooManyFailures(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many attempts, retry in {} s.",
                    Refusal::retry_after_secs(wait)
                ),
            ),
        };
        return Ok((status, login_page(Some(&problem))).into_response());
    }
    let session = console
        .sessions
        .create()
        .await
        .map_err(PageError::unavailable)?;
    tracing::info!(%client, "console sign-in");
    let cookie = set_cookie(&session, console.sessions.ttl(), console.secure_cookie);
    Ok(([(SET_COOKIE, cookie)], Redirect::to("/console")).into_response())
}

pub async fn logout(
    Extension(console): Extension<Console>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    console
        .sessions
        .delete(&session.id)
        .await
        .map_err(PageError::unavailable)?;
    Ok((
        [(SET_COOKIE, clear_cookie(console.secure_cookie))],
        Redirect::to("/console/login"),
    )
        .into_response())
}
