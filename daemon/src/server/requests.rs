//! What the server does with one decoded request: the caps and checks of the edge, rules
//! files parsed off the actor's thread within their budgets, owners parsed, each command
//! turned into an actor [`Request`] (status, metrics and doctor answered from reads of
//! their own), and the actor's answers turned into wire answers.

#![forbid(unsafe_code)]

use super::{caller_of, Peer, Reply, Shared};
use crate::actor::{self, Caller, Msg, Request};
use portd_rules::owner::Owner;
use portd_rules::proto::{Command, ErrorKind, Response};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Semaphore};

/// One decoded request: checked, parsed off the actor's thread when it carries a file,
/// then answered by the actor.
pub(super) async fn handle(peer: &Peer, shared: &Shared, command: Command) -> Reply {
    let _slot = if peer.uid == 0 {
        None
    } else {
        match shared.request_slots(peer.account).acquire_owned().await {
            Ok(p) => Some(p),
            Err(_) => return Response::error(ErrorKind::Internal, vec!["the daemon is stopping".into()]).into(),
        }
    };
    let caller = match command {
        Command::Status | Command::Metrics => caller_of(peer, false),
        // Grants are checked before an apply's file is parsed: named here (off the async
        // workers: the account database may be slow).
        Command::Apply { .. } => {
            let p = Peer { uid: peer.uid, pid: peer.pid, account: peer.account };
            match tokio::task::spawn_blocking(move || caller_of(&p, true)).await {
                Ok(c) => c,
                Err(_) => {
                    return Response::error(ErrorKind::Internal, vec!["looking up the caller failed".into()]).into()
                }
            }
        }
        // Named by the actor when it takes the request, with the account lookups it makes
        // for the request anyway: two thread hops fewer (each a wake-up of an idle thread).
        _ => Caller::unnamed(peer.uid, peer.pid),
    };
    let request = match command {
        Command::Apply { file, text, dry_run, owner } => {
            let checked = match caller.uid {
                0 => Ok(()),
                _ => has_any_grant(shared, &caller).await,
            };
            // The client chooses the name: it is cut and escaped before anything holds it.
            let file = portd_rules::diag::bounded_file_name(&file);
            let parsed = match checked {
                Ok(()) => parse(shared, file, text, (caller.uid != 0).then_some(peer.account)).await,
                Err(r) => Err(r),
            };
            match parsed {
                Ok(forwards) => match owner_of(shared, caller.clone(), owner, None).await {
                    Ok(owner) => Request::Apply { forwards, dry_run, owner },
                    Err(r) => return r.into(),
                },
                Err(r) => {
                    if let portd_rules::proto::Outcome::Error { messages, .. } = &r.result {
                        let target = owner.clone().unwrap_or_else(|| caller.owner().to_string());
                        shared.published.refusals.log(&crate::refusals::Refusal {
                            uid: caller.uid,
                            user: &caller.user,
                            owner: &target,
                            forward: None,
                            what: &format!("apply of {}", caller.who()),
                            causes: messages,
                        });
                    }
                    return r.into();
                }
            }
        }
        Command::Status => return shared_status(shared, caller.uid).await,
        // The same status, encoded as the metrics exposition (off the actor too).
        Command::Metrics => {
            let s = shared_status(shared, caller.uid).await;
            return crate::metrics::answer(&shared.published.metrics, s.response()).into();
        }
        // Concurrent doctors share one hand-over of the actor and one read of the kernel, and
        // an answer serves the doctors of the next 2 s too.
        // Root's doctor may carry the legacy tables root's portctl read: its own read.
        Command::Doctor { legacy_tables: None } => {
            let actor = shared.actor.clone();
            return Reply::Shared(
                shared
                    .published
                    .reads
                    .doctor
                    .run_reusing("doctor", crate::coalesce::DOCTOR_REUSE, || ask_doctor(actor, None))
                    .await,
            );
        }
        // Only root's word on which legacy tables exist is taken.
        Command::Doctor { legacy_tables } => {
            return ask_doctor(shared.actor.clone(), legacy_tables.filter(|_| caller.uid == 0)).await.into()
        }
        Command::Add { forward, owner, dry_run, replace } => {
            let name = forward.name.clone();
            match owner_of(shared, caller.clone(), owner, Some(name)).await {
                Ok(owner) => Request::Add { forward, owner, dry_run, replace },
                Err(r) => return r.into(),
            }
        }
        Command::Remove { name, owner, dry_run, if_exists } => {
            match owner_of(shared, caller.clone(), owner, Some(name.clone())).await {
                Ok(owner) => Request::Remove { name, owner, dry_run, if_exists },
                Err(r) => return r.into(),
            }
        }
        Command::Export { owner } => match owner_of(shared, caller.clone(), owner, None).await {
            Ok(owner) => Request::Export { owner },
            Err(r) => return r.into(),
        },
        Command::Reload { config: Some(_), dry_run: false } => {
            return Response::error(
                ErrorKind::Protocol,
                vec!["a config sent with a reload is only previewed (dry_run)".into()],
            )
            .into()
        }
        Command::Reload { dry_run, config } => Request::Reload { dry_run, config },
        Command::Grants => Request::Grants,
    };
    ask_actor(shared.actor.clone(), caller, request).await.into()
}

/// The owner a request names, parsed at the edge: the actor takes owners typed. A name
/// that is no owner is refused here, and logged like the actor's refusals (`forward`:
/// the forward the request names).
async fn owner_of(
    shared: &Shared,
    caller: Caller,
    owner: Option<String>,
    forward: Option<String>,
) -> Result<Option<Owner>, Response> {
    let Some(raw) = owner else { return Ok(None) };
    let e = match Owner::parse(&raw) {
        Ok(o) => return Ok(Some(o)),
        Err(e) => e,
    };
    // The refusal names the caller as the actor would (off the async workers: the account
    // database may be slow).
    let mut caller = caller;
    if caller.user.is_empty() {
        let (uid, pid) = (caller.uid, caller.pid);
        caller = tokio::task::spawn_blocking(move || caller_of(&Peer { uid, pid, account: uid }, true))
            .await
            .unwrap_or(caller);
    }
    let what = format!("request of {} (pid {})", caller.who(), caller.pid.map_or("?".to_string(), |p| p.to_string()));
    let messages = vec![e];
    shared.published.refusals.log(&crate::refusals::Refusal {
        uid: caller.uid,
        user: &caller.user,
        owner: &raw,
        forward: forward.as_deref(),
        what: &what,
        causes: &messages,
    });
    Err(Response::error(ErrorKind::Invalid, messages))
}

/// The actor's answer to one request, as a wire answer.
async fn ask_actor(actor: Sender<Msg>, caller: Caller, request: Request) -> Response {
    let (tx, rx) = oneshot::channel();
    if actor.send(Msg::Request { caller, request, reply: tx }).is_err() {
        return Response::error(ErrorKind::Internal, vec!["the daemon is stopping".into()]);
    }
    answer(rx.await)
}

/// The doctor's answer, as a wire answer.
async fn ask_doctor(actor: Sender<Msg>, legacy_tables: Option<portd_rules::proto::LegacyTables>) -> Response {
    let (tx, rx) = oneshot::channel();
    if actor.send(Msg::Doctor { legacy_tables, reply: tx }).is_err() {
        return Response::error(ErrorKind::Internal, vec!["the daemon is stopping".into()]);
    }
    answer(rx.await)
}

/// An answer of the actor on the wire (`Err`: the actor ended before answering).
fn answer(a: Result<actor::Answer, oneshot::error::RecvError>) -> Response {
    match a {
        Ok(Ok(body)) => Response::ok(body),
        Ok(Err(e)) => Response::error(e.kind(), e.messages()),
        Err(_) => Response::error(ErrorKind::Internal, vec!["the daemon is stopping".into()]),
    }
}

/// A status: root's read fresh with a netlink socket of its own, so a queue of other
/// users' reads never delays it; other users' share the read in flight.
async fn shared_status(shared: &Shared, uid: u32) -> Reply {
    if uid == 0 {
        return status(shared, &shared.root_reader).await.into();
    }
    Reply::Shared(shared.published.reads.status.run("status", || status(shared, &shared.reader)).await)
}

/// A status: the actor hands over its plan (cheap), and the kernel is read here, on a
/// blocking thread, so a large table never holds up the actor's changes and repairs. A
/// change committed during the read makes it unstable: then the plan is taken again.
async fn status(shared: &Shared, reader: &Arc<Mutex<Option<portd_kernel::nft::Backend>>>) -> Response {
    status_of(&shared.actor, reader).await
}

/// A status read with `reader` (the metrics endpoint has a reader of its own).
pub async fn status_of(actor: &Sender<Msg>, reader: &Arc<Mutex<Option<portd_kernel::nft::Backend>>>) -> Response {
    let stopping = || Response::error(ErrorKind::Internal, vec!["the daemon is stopping".into()]);
    let mut last = String::new();
    for _ in 0..STATUS_ATTEMPTS {
        let (tx, rx) = oneshot::channel();
        if actor.send(Msg::Status { reply: tx }).is_err() {
            return stopping();
        }
        let Ok(snap) = rx.await else { return stopping() };
        let reader = reader.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut guard = reader.lock().unwrap_or_else(|p| p.into_inner());
            let backend = guard.get_or_insert_with(|| portd_kernel::nft::Backend::new(&snap.plan.table));
            let obs = backend.read(&snap.plan)?;
            let sockets = snap.sockets();
            let open = snap.connections();
            Ok::<_, portd_kernel::nft::BackendError>(snap.status(obs.as_ref(), sockets.as_deref(), open.as_ref()))
        });
        match job.await {
            Ok(Ok(status)) => return Response::ok(portd_rules::proto::Body::Status(status)),
            Ok(Err(e @ portd_kernel::nft::BackendError::Unstable { .. })) => last = e.to_string(),
            Ok(Err(e)) => return Response::error(ErrorKind::Kernel, vec![e.to_string()]),
            Err(_) => return Response::error(ErrorKind::Internal, vec!["reading the table failed".into()]),
        }
    }
    Response::error(ErrorKind::Kernel, vec![last])
}

/// Times a status takes a fresh plan when changes keep landing during its read.
const STATUS_ATTEMPTS: usize = 5;

/// Refuses a non-root caller that no grant names (by user or group) before its file is
/// parsed.
async fn has_any_grant(shared: &Shared, caller: &Caller) -> Result<(), Response> {
    let name = caller.user.clone();
    let account = tokio::task::spawn_blocking(move || actor::lookup_account(&name)).await.ok().flatten();
    let grants = shared.published.grants.read().unwrap_or_else(|p| p.into_inner());
    let any = account.as_ref().is_some_and(|a| !portd_rules::policy::grants_of(&grants, a).is_empty());
    if any {
        Ok(())
    } else {
        Err(Response::error(
            ErrorKind::Denied,
            vec![format!("{} has no grant in portd's config; ask an operator for one", caller.who())],
        ))
    }
}

/// Parses and validates a rules file on a blocking thread, within the parse budget. A
/// non-root caller's (`account`) file waits for the account's other file to be checked,
/// then takes its estimated memory from the shared parse budget: a file estimated above
/// the whole budget is refused before the parser allocates.
async fn parse(
    shared: &Shared,
    file: String,
    text: String,
    account: Option<u32>,
) -> Result<Vec<portd_rules::Forward>, Response> {
    let busy = || Response::error(ErrorKind::Internal, vec!["the daemon is stopping".into()]);
    let turn = match account {
        None => None,
        Some(a) => match tokio::time::timeout(shared.limits.parse_budget, shared.parse_turn(a).acquire_owned()).await {
            Ok(Ok(t)) => Some(t),
            Ok(Err(_)) => return Err(busy()),
            Err(_) => {
                return Err(Response::error(
                    ErrorKind::Internal,
                    vec!["another file of yours is still being checked; retry when it is done".into()],
                ))
            }
        },
    };
    let memory = if account.is_none() { None } else { Some(take_parse_memory(shared, &text).await?) };
    // The permits live as long as the parse itself, even past the budget: a parse that
    // runs over keeps its slot (and its account's turn) until it ends, so overdue parses
    // cannot pile up.
    let permit = shared.parses.clone().acquire_owned().await.map_err(|_| busy())?;
    let job = tokio::task::spawn_blocking(move || {
        let r = portd_rules::parse_rules(&file, &text).map_err(|d| Box::new(Response::invalid_file(file, &d)));
        drop(text);
        drop(permit);
        drop(memory);
        drop(turn);
        r
    });
    match tokio::time::timeout(shared.limits.parse_budget, job).await {
        Err(_) => Err(Response::error(
            ErrorKind::Invalid,
            vec![format!(
                "the file took longer than {:?} to check and was refused; split it into smaller files",
                shared.limits.parse_budget
            )],
        )),
        Ok(Err(_)) => Err(Response::error(ErrorKind::Internal, vec!["checking the file failed".into()])),
        Ok(Ok(Err(r))) => Err(*r),
        Ok(Ok(Ok(rules))) => Ok(rules.forwards),
    }
}

/// Takes what parsing `text` may cost from the shared parse memory budget, waiting
/// within the parse budget for other parses to end; refuses at once a file that could
/// never fit.
async fn take_parse_memory(shared: &Shared, text: &str) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    let cost = portd_rules::load::parse_cost(text);
    let budget = shared.limits.parse_memory;
    let kib = u32::try_from(cost.div_ceil(1024)).unwrap_or(u32::MAX);
    if cost > budget || kib as usize > Semaphore::MAX_PERMITS {
        return Err(Response::error(
            ErrorKind::Invalid,
            vec![format!(
                "the file would take up to {} MiB to check ({} bytes of YAML); one request may take {} MiB: split it into smaller files",
                cost.div_ceil(1 << 20),
                text.len(),
                budget >> 20
            )],
        ));
    }
    let take = shared.parse_memory.clone().acquire_many_owned(kib);
    match tokio::time::timeout(shared.limits.parse_budget, take).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(_)) => Err(Response::error(ErrorKind::Internal, vec!["the daemon is stopping".into()])),
        Err(_) => Err(Response::error(
            ErrorKind::Internal,
            vec!["portd is checking other large files; retry in a moment".into()],
        )),
    }
}
