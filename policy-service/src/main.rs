//! `policy-service`: settings from the environment (and `.env`), then serve.

use std::process::ExitCode;

use policy_service::settings::SameSite;
use policy_service::{app, AppState, Settings};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("policy-service: cannot start: {err}");
            return ExitCode::from(2);
        }
    };
    // RUST_LOG, when set, refines LOG_LEVEL (e.g. `info,sqlx=warn`).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.log_level.as_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    if settings.secret_key_generated {
        tracing::warn!(
            "SECRET_KEY is not set: using a random one for this process; \
             set SECRET_KEY so that every replica and restart shares it"
        );
    }
    if settings.session_cookie_samesite == SameSite::None && !settings.session_cookie_secure {
        tracing::warn!(
            "SESSION_COOKIE_SAMESITE=none without SESSION_COOKIE_SECURE=true: \
             browsers drop such cookies, so sign-in will not stick"
        );
    }
    for pattern in &settings.oidc_group_name_pattern {
        if pattern.matches_everything() {
            tracing::warn!(
                "OIDC_GROUP_NAME_PATTERN {pattern:?} matches every group: anyone the \
                 identity provider signs in with at least one group may use MLflow"
            );
        }
    }
    if settings.authz_shared_key.is_none() {
        tracing::warn!(
            "AUTHZ_SHARED_KEY is not set: the internal API (/authz/v1/...) answers anyone who \
             reaches this service; set it here and in Envoy's environment"
        );
    }
    if settings.default_mlflow_permission.grants_access() {
        tracing::warn!(
            "DEFAULT_MLFLOW_PERMISSION={}: every user holds it on every experiment, model and \
             prompt no grant covers; set DEFAULT_MLFLOW_PERMISSION=NO_PERMISSIONS to deny \
             what is not granted",
            settings.default_mlflow_permission
        );
    }
    let addr = settings.listen_addr;
    let callback = settings.callback_path().to_string();
    let state = match AppState::new(settings).await {
        Ok(state) => state,
        Err(err) => {
            tracing::error!("cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!("cannot listen on {addr} (POLICY_SERVICE_ADDR): {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, %callback, kid = state.keys.kid(), "policy service listening");
    // Redis is not contacted before the first sign-in or renewal.
    tracing::info!(session_type = ?state.settings.session_type, "server-side sessions");
    // MLflow is not contacted before the first decision that needs it.
    tracing::info!(
        mlflow = %state.settings.mlflow_tracking_uri,
        order = ?state.settings.permission_source_order,
        default = %state.settings.default_mlflow_permission,
        "permissions"
    );
    if let Err(err) = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        tracing::error!("server error: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
