//! Executing a [`Plan`] against Fly (ARCHITECTURE.md "How `fks-bootstrap -c` flows", steps 2,
//! 4 and 6): [`observe`] reads the target's app with one list call per resource, [`execute`]
//! runs the plan's steps as soon as their dependencies are done (a tokio `JoinSet`), through a
//! [`Client`] whose token buckets keep within Fly's rate limits and which never duplicates a
//! machine or a volume (idempotency metadata, look before re-creating).
//!
//! Every wait has a deadline; when it passes, the error names the node and the state it is
//! stuck in. Progress goes out as [`Event`]s on a channel; the result is a [`Summary`].
//!
//! Must not: print (callers draw events), or print, log or put into an error the join token.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fly::types::{ExecResponse, Machine, MachineListFilter, MachineState, Volume};
use crate::fly::{Client, Error as FlyError};
use crate::plan::{
    Action, MachineRef, Plan, Ref, Step, StepId, ALLOW_SHARED_ZONES_FLAG, ENV_ZONE, META_CLUSTER,
    META_NODE, META_READY, TOKEN_SECRET,
};
use crate::sync::lock;

pub mod k3s;
pub mod lease;

use k3s::{exec_request, K3sToken, NodesReadiness, Readiness, TokenError};

/// Why a run stopped. Steps already done stay done; running the same command again picks up
/// from what exists.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Fly API call failed.
    #[error("{what}")]
    Fly {
        /// The step, in words, with its node.
        what: String,
        /// The client's error (names the operation, app and ids).
        #[source]
        source: Box<FlyError>,
    },
    /// A machine did not reach `started` in time.
    #[error("node {node}: machine {machine} in app {app} is stuck in state {state}: not started after {}s", waited.as_secs())]
    Stuck {
        /// The node.
        node: String,
        /// The app.
        app: String,
        /// The machine id.
        machine: String,
        /// The last state seen (`unknown` when none was reported).
        state: String,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// A node's k3s was not Ready in time.
    #[error("node {node}: k3s node {k3s_node} not Ready after {}s (last seen: {last})", waited.as_secs())]
    K3sNotReady {
        /// The node.
        node: String,
        /// Its k3s node name.
        k3s_node: String,
        /// What the last check said.
        last: String,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// A node's etcd member was not a healthy voter in time.
    #[error("node {node}: the etcd member of k3s node {k3s_node} is not a healthy voting member after {}s (last seen: {last})", waited.as_secs())]
    MemberNotHealthy {
        /// The node.
        node: String,
        /// Its k3s node name (its member is named after it).
        k3s_node: String,
        /// What the last check said.
        last: String,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// etcd did not remove a member.
    #[error("node {node}: removing etcd member {member} through machine {machine} failed: {why}")]
    RemoveMember {
        /// The node the member belonged to.
        node: String,
        /// The member's hex id and name.
        member: String,
        /// The machine whose etcd was asked.
        machine: String,
        /// etcd's or the command's answer (one line).
        why: String,
    },
    /// The etcd member list could not be read to remove the members of destroyed machines.
    #[error("node {node}: reading the etcd member list through machine {machine}, to remove any member of destroyed machine(s) {gone}, failed: {why}")]
    MemberList {
        /// The node replaced.
        node: String,
        /// The machine whose etcd was asked.
        machine: String,
        /// The destroyed machines, comma-separated.
        gone: String,
        /// etcd's or the command's answer (one line).
        why: String,
    },
    /// The join token could not be read in time.
    #[error("node {node}: reading the join token on machine {machine} failed")]
    Token {
        /// The node.
        node: String,
        /// The machine id.
        machine: String,
        /// Why (never the output).
        #[source]
        source: TokenError,
    },
    /// A command run through exec failed.
    #[error("node {node}: `{program}` on machine {machine} exited with {code}: {stderr}")]
    Exec {
        /// The node.
        node: String,
        /// The machine the command ran on.
        machine: String,
        /// The program and its first arguments (no values from the user).
        program: String,
        /// Exit code.
        code: i64,
        /// The first line of stderr.
        stderr: String,
    },
    /// No server a kubectl step could run on answered the exec call.
    #[error("node {node}: no started server answers exec to run kubectl for k3s node {k3s_node} (exec failed on {})", tried.iter().map(|t| format!("{}: {}", t.machine, t.why)).collect::<Vec<_>>().join("; "))]
    NoExec {
        /// The node.
        node: String,
        /// Its k3s node name.
        k3s_node: String,
        /// Each server asked, in order, and why its exec call failed.
        tried: Vec<ExecFailure>,
    },
    /// Steps of a plan that keeps going failed; each was sent to the caller with its error
    /// ([`execute_each`]).
    #[error("{failed} of {steps} steps failed")]
    StepsFailed {
        /// How many failed.
        failed: usize,
        /// How many the plan has.
        steps: usize,
    },
    /// No zone was left for a volume of its own.
    #[error(
        "node {node}: no zone of region {region} is left for a volume of its own in app {app} \
         (or the region is out of capacity); pass {ALLOW_SHARED_ZONES_FLAG} to let volumes share a zone"
    )]
    NoUniqueZone {
        /// The node.
        node: String,
        /// The app.
        app: String,
        /// The region.
        region: String,
        /// Fly's answer.
        #[source]
        source: Box<FlyError>,
    },
    /// A machine stayed leased by someone else past the time an update may wait for it.
    #[error(
        "node {node}: machine {machine} in app {app} is leased by {holder} until {expires_at} \
         (unix seconds), still after waiting {}s: another run is changing it; run again once \
         it is done", waited.as_secs()
    )]
    LeaseHeld {
        /// The node.
        node: String,
        /// The app.
        app: String,
        /// The machine id.
        machine: String,
        /// The lease's owner and description.
        holder: String,
        /// When the lease expires unless its holder refreshes it (unix seconds).
        expires_at: i64,
        /// How long this run waited.
        waited: Duration,
    },
    /// A step task panicked or was cancelled.
    #[error("step {step} stopped unexpectedly")]
    Task {
        /// The step.
        step: String,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The plan refers to a step output that is not there (a bug in the plan).
    #[error("step {step} needs the result of {needs}, which is missing")]
    Missing {
        /// The step.
        step: StepId,
        /// The step it needs.
        needs: StepId,
    },
}

/// An exec call that failed (the API did not run the command), and on which machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFailure {
    /// The machine id.
    pub machine: String,
    /// Why, the error chain in one line.
    pub why: String,
}

/// Deadlines and pacing of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a machine may take to reach `started`.
    pub started_timeout: Duration,
    /// How long a node's k3s may take to become Ready (and the token to appear).
    pub k3s_timeout: Duration,
    /// Pause between k3s checks. The Ready checks of all nodes that wait on the same machine
    /// share one `kubectl get nodes` per interval, so 1 s keeps them within Fly's limit of 1
    /// request/s per action and machine (reference fly-machines-api.md §5).
    pub poll: Duration,
    /// At most this many steps at once (`None`: as many as the dependencies allow). `Some(1)`
    /// runs the steps one after another, node by node, as k3s.sh did: the baseline the
    /// lifecycle benchmark compares with.
    pub max_parallel: Option<usize>,
    /// The TTL of the lease an update holds, refreshed in the background while it is held
    /// ([`lease`]): how long a run killed mid-update keeps the next run waiting, at most.
    pub lease_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            started_timeout: Duration::from_secs(300),
            k3s_timeout: Duration::from_secs(600),
            poll: Duration::from_secs(1),
            max_parallel: None,
            lease_ttl: lease::DEFAULT_TTL,
        }
    }
}

/// The phases a node goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Its volume exists.
    Volume,
    /// Its machine exists.
    Machine,
    /// Its machine is started.
    Started,
    /// Its k3s node is Ready.
    K3sReady,
    /// It is done (tainted if a server, marked ready).
    Joined,
    /// Its existing machine was updated to the desired config and is started again.
    Updated,
}

/// Progress of one node, for a live view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The node.
    pub node: String,
    /// The phase it reached.
    pub phase: Phase,
    /// Time since the run started.
    pub elapsed: Duration,
}

/// What a run did for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSummary {
    /// The node.
    pub name: String,
    /// Its machine id.
    pub machine: Option<String>,
    /// Its volume's zone.
    pub zone: Option<String>,
    /// Its 6PN address as last seen (it can change when the machine moves).
    pub private_ip: Option<String>,
    /// When (since the run started) it reached each phase in this run.
    pub phases: BTreeMap<Phase, Duration>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The app.
    pub app: String,
    /// Every desired node, in plan order.
    pub nodes: Vec<NodeSummary>,
    /// Steps done.
    pub steps: usize,
    /// How long the run took.
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    /// One line per node: name, machine, zone, 6PN address and when it was started/joined in
    /// this run; then the total time.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "app {}:", self.app)?;
        for n in &self.nodes {
            let at = |p: Phase| {
                n.phases
                    .get(&p)
                    .map_or_else(|| "-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()))
            };
            writeln!(
                f,
                "  {:<20} machine {:<16} zone {:<6} 6pn {:<24} started {:>6} joined {:>6}",
                n.name,
                n.machine.as_deref().unwrap_or("-"),
                n.zone.as_deref().unwrap_or("-"),
                n.private_ip.as_deref().unwrap_or("-"),
                at(Phase::Started),
                at(Phase::Joined),
            )?;
        }
        write!(
            f,
            "{} step{} in {:.1}s",
            self.steps,
            if self.steps == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64()
        )
    }
}

/// Reads what exists of `target` (the one observer, [`crate::observe::target`]).
pub use crate::observe::target as observe;

/// What a step produced.
#[derive(Debug, Clone)]
enum Output {
    Volume(Box<Volume>),
    Machine(Box<Machine>),
    Token(K3sToken),
    /// A secrets write; the app's secrets version it made, when Fly said.
    Secrets(Option<u64>),
    /// What the cluster last heard from a node before its update.
    Boot(k3s::Boot),
    Done,
}

/// Shared by the step tasks.
struct Ctx {
    client: Client,
    options: Options,
    started: Instant,
    /// Volume ids known to exist (the observed ones plus those made so far), for the
    /// client's ambiguous-create rule.
    volumes: Mutex<BTreeSet<String>>,
    /// The last shared Ready check per machine it runs on (app, machine id).
    ready_checks: Mutex<HashMap<(String, String), Arc<ReadySlot>>>,
}

/// One machine's last shared Ready check; the async lock lets one wait run the check while
/// the others queue for its answer.
type ReadySlot = tokio::sync::Mutex<Option<ReadyCheck>>;

/// An answer of [`k3s::ready_all_command`] and when the check began.
#[derive(Debug, Clone)]
struct ReadyCheck {
    at: Instant,
    nodes: NodesReadiness,
}

/// A Ready check of every node, run on `via` and shared by all the waits on that machine: a
/// wait takes the last answer when it began after the one this wait saw before (`seen`) and
/// less than one poll interval ago; otherwise it runs the check itself while the other waits
/// queue and then take its answer. However many nodes wait, `via` gets at most about one
/// exec per poll interval; one exec per node per interval would queue behind Fly's limit of
/// 1 request/s per machine (reference fly-machines-api.md §5) and delay every node.
async fn shared_ready_check(
    ctx: &Ctx,
    via: &(String, String),
    seen: Option<Instant>,
) -> ReadyCheck {
    let slot = lock(&ctx.ready_checks)
        .entry(via.clone())
        .or_default()
        .clone();
    let mut last = slot.lock().await;
    if let Some(check) = last.as_ref() {
        if seen.is_none_or(|t| check.at > t) && check.at.elapsed() < ctx.options.poll {
            return check.clone();
        }
    }
    let at = Instant::now();
    let req = exec_request(k3s::ready_all_command());
    // Exec fails while the guest boots; that is "not yet" for every node.
    let nodes = match ctx.client.exec(&via.0, &via.1, &req).await {
        Ok(out) => k3s::parse_ready_all(&out),
        Err(e) => NodesReadiness::failed(e.to_string()),
    };
    let check = ReadyCheck { at, nodes };
    *last = Some(check.clone());
    check
}

/// The outputs of the earlier steps a step reads ([`Action::inputs`] and its dependencies),
/// taken from the finished ones when it starts.
struct Inputs {
    /// The step these are for.
    step: StepId,
    outputs: HashMap<StepId, Output>,
    /// The highest secrets version written by the step's dependencies, if any said one.
    secrets_version: Option<u64>,
}

impl Inputs {
    fn of(step: &Step, done: &HashMap<StepId, Output>) -> Inputs {
        let outputs = step
            .action
            .inputs()
            .into_iter()
            .filter_map(|s| done.get(&s).map(|o| (s, o.clone())))
            .collect();
        let secrets_version = step
            .depends_on
            .iter()
            .filter_map(|d| match done.get(d) {
                Some(Output::Secrets(v)) => *v,
                _ => None,
            })
            .max();
        Inputs {
            step: step.id,
            outputs,
            secrets_version,
        }
    }

    fn get(&self, needs: StepId) -> Result<&Output, Error> {
        self.outputs.get(&needs).ok_or(Error::Missing {
            step: self.step,
            needs,
        })
    }

    /// The id a reference stands for: known, or made by an earlier step.
    fn id(&self, r: &Ref) -> Result<String, Error> {
        match r {
            Ref::Known(id) => Ok(id.clone()),
            Ref::Step(s) => match self.get(*s)? {
                Output::Machine(m) => Ok(m.id.clone()),
                Output::Volume(v) => Ok(v.id.clone()),
                _ => Err(Error::Missing {
                    step: self.step,
                    needs: *s,
                }),
            },
        }
    }

    /// A machine's app and id.
    fn machine(&self, m: &MachineRef) -> Result<(String, String), Error> {
        Ok((m.app.clone(), self.id(&m.id)?))
    }
}

/// The phase a finished step marks.
fn phase_of(action: &Action) -> Option<Phase> {
    match action {
        Action::CreateVolume { .. } => Some(Phase::Volume),
        Action::CreateMachine { .. } => Some(Phase::Machine),
        Action::UpdateMachine { .. } => Some(Phase::Updated),
        Action::WaitStarted { .. } => Some(Phase::Started),
        Action::WaitK3sReady { .. } | Action::WaitK3sReadyAgain { .. } => Some(Phase::K3sReady),
        Action::MarkReady { .. } => Some(Phase::Joined),
        _ => None,
    }
}

/// Runs `plan`: every step whose dependencies are done is started at once; the first error
/// stops the run (the other running steps are cancelled) and is returned; with
/// [`Plan::keep_going`] the steps that do not depend on a failed one still run, and the first
/// error is returned at the end. Events go to `events` when given (a closed receiver is
/// ignored).
pub async fn execute(
    client: &Client,
    plan: &Plan,
    options: &Options,
    events: Option<UnboundedSender<Event>>,
) -> Result<Summary, Error> {
    execute_reporting(client, plan, options, events, None).await
}

/// A step that finished, as [`execute_reporting`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The step.
    pub step: StepId,
    /// The id of the machine or volume it made or returned, when it did.
    pub made: Option<String>,
}

/// Replaces each `<made by [N]>` in `line` (a plan step's words for a machine or volume made
/// by step N) with the id that step gave, when it has finished.
pub fn name_made(line: &str, made: &HashMap<StepId, String>) -> String {
    made.iter().fold(line.to_string(), |line, (step, id)| {
        line.replace(&format!("<made by {step}>"), id)
    })
}

/// [`execute`], also sending every step as it finishes to `finished` (for a command that
/// reports each step, like destroy's one line per removal).
pub async fn execute_reporting(
    client: &Client,
    plan: &Plan,
    options: &Options,
    events: Option<UnboundedSender<Event>>,
    finished: Option<UnboundedSender<Finished>>,
) -> Result<Summary, Error> {
    run_plan(client, plan, options, events, finished, None).await
}

/// [`execute_reporting`] for a plan that keeps going ([`Plan::keep_going`]) and a caller that
/// reports every step: each finished step goes to `finished`, each failed step goes to
/// `failed` with its error (not logged here: the caller says it). When any step failed the
/// result is [`Error::StepsFailed`].
pub async fn execute_each(
    client: &Client,
    plan: &Plan,
    options: &Options,
    finished: UnboundedSender<Finished>,
    failed: UnboundedSender<(StepId, Error)>,
) -> Result<Summary, Error> {
    run_plan(client, plan, options, None, Some(finished), Some(failed)).await
}

async fn run_plan(
    client: &Client,
    plan: &Plan,
    options: &Options,
    events: Option<UnboundedSender<Event>>,
    finished: Option<UnboundedSender<Finished>>,
    failed: Option<UnboundedSender<(StepId, Error)>>,
) -> Result<Summary, Error> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        options: options.clone(),
        started: Instant::now(),
        volumes: Mutex::new(plan.observed_volumes.clone()),
        ready_checks: Mutex::new(HashMap::new()),
    });
    let mut summary = Summary {
        app: plan.app.clone(),
        nodes: plan
            .nodes
            .iter()
            .map(|n| NodeSummary {
                name: n.name.clone(),
                machine: n.machine.clone(),
                zone: n.zone.clone(),
                private_ip: n.private_ip.clone(),
                phases: BTreeMap::new(),
            })
            .collect(),
        ..Summary::default()
    };
    let mut done: HashMap<StepId, Output> = HashMap::new();
    let mut running: BTreeSet<StepId> = BTreeSet::new();
    let mut tasks: JoinSet<(StepId, Result<Output, Error>)> = JoinSet::new();
    let mut task_steps: HashMap<tokio::task::Id, StepId> = HashMap::new();
    let mut first_error: Option<Error> = None;
    // The steps that failed in a plan that keeps going: never started again.
    let mut failed_steps: BTreeSet<StepId> = BTreeSet::new();
    let mut failures = 0usize;
    // One step at a time is k3s.sh's way: each node is finished (through k3s Ready) before the
    // next one starts, so steps go node by node. Otherwise plan order.
    let mut order: Vec<&Step> = plan.steps.iter().collect();
    if options.max_parallel == Some(1) {
        let rank = |s: &Step| {
            s.node
                .as_ref()
                .and_then(|n| plan.nodes.iter().position(|p| &p.name == n))
                .map_or(0, |i| i + 1)
        };
        order.sort_by_key(|s| (rank(s), s.id));
    }
    loop {
        for step in order.iter().copied() {
            if done.contains_key(&step.id)
                || running.contains(&step.id)
                || failed_steps.contains(&step.id)
            {
                continue;
            }
            if !step.depends_on.iter().all(|d| done.contains_key(d)) {
                continue;
            }
            if options
                .max_parallel
                .is_some_and(|max| running.len() >= max.max(1))
            {
                break;
            }
            let inputs = Inputs::of(step, &done);
            let step = step.clone();
            let node = step.node.clone().unwrap_or_default();
            let ctx = ctx.clone();
            let id = step.id;
            running.insert(id);
            let handle =
                tasks.spawn(async move { (id, run_step(&ctx, &node, step.action, inputs).await) });
            task_steps.insert(handle.id(), id);
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (id, result) = joined.map_err(|source| Error::Task {
            step: task_steps
                .get(&source.id())
                .map(|s| plan.steps[s.0].to_string())
                .unwrap_or_else(|| "unknown".to_string()),
            source,
        })?;
        running.remove(&id);
        let output = match result {
            Ok(output) => output,
            Err(e) if plan.keep_going => {
                failed_steps.insert(id);
                failures += 1;
                // A caller that takes the failures reports them; a closed receiver gives the
                // error back, and it is kept as below.
                let e = match &failed {
                    Some(tx) => match tx.send((id, e)) {
                        Ok(()) => continue,
                        Err(tokio::sync::mpsc::error::SendError((_, e))) => e,
                    },
                    None => e,
                };
                tracing::error!("{}", crate::errors::chain(&e));
                first_error.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let step = &plan.steps[id.0];
        if let Some(node) = &step.node {
            if let Some(ns) = summary.nodes.iter_mut().find(|n| &n.name == node) {
                match &output {
                    Output::Volume(v) => ns.zone = Some(v.zone.clone()),
                    Output::Machine(m) => {
                        ns.machine = Some(m.id.clone());
                        if !m.private_ip.is_empty() {
                            ns.private_ip = Some(m.private_ip.clone());
                        }
                    }
                    _ => {}
                }
                if let Some(phase) = phase_of(&step.action) {
                    let elapsed = ctx.started.elapsed();
                    ns.phases.insert(phase, elapsed);
                    if let Some(tx) = &events {
                        let _ = tx.send(Event {
                            node: node.clone(),
                            phase,
                            elapsed,
                        });
                    }
                }
            }
        }
        if let Some(tx) = &finished {
            let made = match &output {
                Output::Machine(m) => Some(m.id.clone()),
                Output::Volume(v) => Some(v.id.clone()),
                _ => None,
            };
            let _ = tx.send(Finished { step: id, made });
        }
        done.insert(id, output);
        summary.steps += 1;
    }
    summary.elapsed = ctx.started.elapsed();
    match first_error {
        Some(e) => Err(e),
        None if failures > 0 => Err(Error::StepsFailed {
            failed: failures,
            steps: plan.steps.len(),
        }),
        None => Ok(summary),
    }
}

fn fly_err(what: String) -> impl FnOnce(FlyError) -> Error {
    move |source| Error::Fly {
        what,
        source: Box::new(source),
    }
}

async fn run_step(ctx: &Ctx, node: &str, action: Action, inputs: Inputs) -> Result<Output, Error> {
    let c = &ctx.client;
    match action {
        Action::CreateApp { request: req } => {
            let name = req.app_name().unwrap_or_default().to_string();
            c.create_app(&req)
                .await
                .map_err(fly_err(format!("creating app {name}")))?;
            Ok(Output::Done)
        }
        Action::CreateVolume {
            app,
            mut request,
            share_if_full,
        } => {
            let what = format!("node {node}: creating volume {} in app {app}", request.name);
            let before = lock(&ctx.volumes).clone();
            let v = match c.create_volume(&app, &request, &before).await {
                Ok(v) => v,
                Err(e)
                    if e.fly_status() == Some("insufficient_capacity")
                        && request.require_unique_zone != Some(false) =>
                {
                    // A run killed mid-create may have made this node's volume after the
                    // re-run looked: it is the unattached one nobody in this run knows.
                    if let Some(v) = adopt_volume(ctx, &app, &request.name).await {
                        tracing::info!(%app, %node, volume = %v.id, zone = %v.zone, "adopted a volume an interrupted run made");
                        return Ok(Output::Volume(Box::new(v)));
                    }
                    if !share_if_full {
                        return Err(Error::NoUniqueZone {
                            node: node.to_string(),
                            app,
                            region: request.region.clone().unwrap_or_default(),
                            source: Box::new(e),
                        });
                    }
                    tracing::warn!(%app, %node, "no unique zone left; the volume shares a zone as allowed");
                    request.require_unique_zone = Some(false);
                    let before = lock(&ctx.volumes).clone();
                    c.create_volume(&app, &request, &before)
                        .await
                        .map_err(fly_err(what))?
                }
                Err(e) => return Err(fly_err(what)(e)),
            };
            lock(&ctx.volumes).insert(v.id.clone());
            Ok(Output::Volume(Box::new(v)))
        }
        Action::CreateMachine {
            app,
            request,
            volume,
            bootstrap,
        } => {
            let made_volume = match &volume {
                Ref::Step(s) => match inputs.get(*s)? {
                    Output::Volume(v) => Some(v.as_ref().clone()),
                    _ => None,
                },
                Ref::Known(_) => None,
            };
            let bootstrap_id = bootstrap.as_ref().map(|b| inputs.id(b)).transpose()?;
            let request = Box::new(crate::plan::complete_machine_request(
                *request,
                made_volume.as_ref(),
                bootstrap_id.as_deref(),
                c.new_launch_id(),
                inputs.secrets_version,
            ));
            let zone = request.config.env.get(ENV_ZONE).cloned();
            // The plan tags every machine with its cluster; the step's node is its fks_node.
            let cluster = request
                .config
                .metadata
                .get(META_CLUSTER)
                .cloned()
                .unwrap_or_default();
            let m = match c.create_machine(&app, *request).await {
                Ok(m) => m,
                // A run killed mid-create may have made this node's machine after the re-run
                // looked (its create then finds the volume taken): adopt it.
                Err(e) => match adopt_machine(c, &app, &cluster, node).await {
                    Some(m) => {
                        tracing::info!(%app, %node, machine = %m.id, "adopted the machine an interrupted run made");
                        m
                    }
                    None => {
                        return Err(fly_err(format!(
                            "node {node}: creating its machine in app {app}"
                        ))(e))
                    }
                },
            };
            tracing::debug!(%app, %node, machine = %m.id, zone = zone.as_deref().unwrap_or(""), "machine created");
            Ok(Output::Machine(Box::new(m)))
        }
        Action::UpdateMachine {
            machine, config, ..
        } => {
            let (app, id) = inputs.machine(&machine)?;
            update_machine(ctx, node, &app, &id, *config).await
        }
        Action::ReadBoot { machine, via } => {
            let (app, machine) = inputs.machine(&machine)?;
            let via = inputs.machine(&via)?;
            let k3s_node = k3s::k3s_node_name(&machine, &app);
            let req = exec_request(k3s::boot_command(&k3s_node));
            // A node the API does not answer for has no baseline: any Ready counts after.
            let boot = match c.exec(&via.0, &via.1, &req).await {
                Ok(out) if out.exit_code == 0 => k3s::Boot::parse(&out.stdout),
                Ok(out) => {
                    tracing::warn!(%node, %k3s_node, stderr = %out.stderr.lines().next().unwrap_or(""), "no boot baseline before the update");
                    k3s::Boot::default()
                }
                Err(e) => {
                    tracing::warn!(%node, %k3s_node, error = %crate::errors::chain(&e), "no boot baseline before the update");
                    k3s::Boot::default()
                }
            };
            Ok(Output::Boot(boot))
        }
        Action::WaitK3sReadyAgain {
            machine,
            via,
            before,
            kubelet,
        } => {
            let Output::Boot(before) = inputs.get(before)?.clone() else {
                return Err(Error::Missing {
                    step: inputs.step,
                    needs: before,
                });
            };
            let (app, machine) = inputs.machine(&machine)?;
            let via = inputs.machine(&via)?;
            let k3s_node = k3s::k3s_node_name(&machine, &app);
            let req = exec_request(k3s::boot_command(&k3s_node));
            let started = Instant::now();
            let deadline = started + ctx.options.k3s_timeout;
            loop {
                let last = match c.exec(&via.0, &via.1, &req).await {
                    Ok(out) if out.exit_code == 0 => {
                        let now = k3s::Boot::parse(&out.stdout);
                        let runs = crate::plan::skew::kubernetes_version(&now.kubelet);
                        if now.ready_since(&before) && runs == kubelet {
                            return Ok(Output::Done);
                        }
                        format!(
                            "Ready={} heartbeat {} (before the update: {}), kubelet {} (want Kubernetes {kubelet})",
                            now.status,
                            now.heartbeat,
                            before.heartbeat,
                            if now.kubelet.is_empty() { "-" } else { now.kubelet.as_str() }
                        )
                    }
                    Ok(out) => out.stderr.lines().next().unwrap_or("").to_string(),
                    Err(e) => crate::errors::chain(&e),
                };
                if Instant::now() + ctx.options.poll > deadline {
                    return Err(Error::K3sNotReady {
                        node: node.to_string(),
                        k3s_node,
                        last,
                        waited: started.elapsed(),
                    });
                }
                tokio::time::sleep(ctx.options.poll).await;
            }
        }
        Action::StartMachine { machine } => {
            let (app, id) = inputs.machine(&machine)?;
            let what = format!("node {node}: starting machine {id}");
            let started = Instant::now();
            let deadline = started + ctx.options.started_timeout;
            // A lease a killed run left (a 409) is waited out (see `lease::wait_out`).
            loop {
                match c.start_machine(&app, &id, None).await {
                    Ok(_) => break,
                    Err(e) if e.status_code() == Some(409) => {
                        lease::wait_out(c, node, &app, &id, started, deadline, e, &what).await?;
                    }
                    Err(e) => return Err(fly_err(what)(e)),
                }
            }
            Ok(Output::Done)
        }
        Action::WaitStarted { machine } => {
            let (app, id) = inputs.machine(&machine)?;
            let deadline = Instant::now() + ctx.options.started_timeout;
            match c
                .wait(&app, &id, MachineState::Started, None, deadline)
                .await
            {
                Ok(_) => {}
                Err(FlyError::WaitTimeout { last, waited, .. }) => {
                    return Err(Error::Stuck {
                        node: node.to_string(),
                        app,
                        machine: id,
                        state: last.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
                        waited,
                    })
                }
                Err(e) => return Err(fly_err(format!("node {node}: waiting for machine {id}"))(e)),
            }
            let m = c
                .get_machine(&app, &id)
                .await
                .map_err(fly_err(format!("node {node}: reading machine {id}")))?;
            Ok(Output::Machine(Box::new(m)))
        }
        Action::WaitK3sReady { machine, via } => {
            let (app, machine) = inputs.machine(&machine)?;
            let via = inputs.machine(&via)?;
            let k3s_node = k3s::k3s_node_name(&machine, &app);
            let started = Instant::now();
            let deadline = started + ctx.options.k3s_timeout;
            let mut seen = None;
            loop {
                let check = shared_ready_check(ctx, &via, seen).await;
                seen = Some(check.at);
                let last = match check.nodes.of(&k3s_node) {
                    Readiness::Ready => return Ok(Output::Done),
                    other => other.to_string(),
                };
                // The next check is due one interval after this one began, not after it
                // ended, so waits on the same machine line up on the same checks.
                let next = check.at + ctx.options.poll;
                if next > deadline {
                    return Err(Error::K3sNotReady {
                        node: node.to_string(),
                        k3s_node,
                        last,
                        waited: started.elapsed(),
                    });
                }
                tokio::time::sleep_until(next).await;
            }
        }
        Action::ReadToken { from } => {
            let (app, id) = inputs.machine(&from)?;
            let deadline = Instant::now() + ctx.options.k3s_timeout;
            let req = exec_request(k3s::token_command());
            loop {
                let out = c.exec(&app, &id, &req).await.map_err(fly_err(format!(
                    "node {node}: reading the join token on {id}"
                )))?;
                match k3s::parse_token(&out) {
                    Ok(t) => return Ok(Output::Token(t)),
                    Err(e @ (TokenError::Exit(_) | TokenError::Empty))
                        if Instant::now() + ctx.options.poll <= deadline =>
                    {
                        tracing::debug!(%node, machine = %id, error = %e, "join token not there yet");
                        tokio::time::sleep(ctx.options.poll).await;
                    }
                    Err(source) => {
                        return Err(Error::Token {
                            node: node.to_string(),
                            machine: id,
                            source,
                        })
                    }
                }
            }
        }
        Action::SetFileSecrets { app, values } => {
            let names = values.keys().cloned().collect::<Vec<_>>().join(", ");
            let written = c
                .update_secrets(
                    &app,
                    values.into_iter().map(|(k, v)| (k, Some(v))).collect(),
                )
                .await
                .map_err(fly_err(format!("storing secrets {names} of app {app}")))?;
            Ok(Output::Secrets(written.version))
        }
        Action::SetTokenSecret { app, token } => {
            let Output::Token(token) = inputs.get(token)? else {
                return Err(Error::Missing {
                    step: inputs.step,
                    needs: token,
                });
            };
            let written = c
                .set_secret(&app, TOKEN_SECRET, &token.file_secret())
                .await
                .map_err(fly_err(format!(
                    "storing secret {TOKEN_SECRET} of app {app}"
                )))?;
            Ok(Output::Secrets(written.version))
        }
        Action::Taint {
            machine,
            via,
            fallback,
        } => {
            let (app, machine) = inputs.machine(&machine)?;
            let k3s_node = k3s::k3s_node_name(&machine, &app);
            let req = exec_request(k3s::taint_command(&k3s_node));
            let mut tried = Vec::new();
            // The first server whose exec call answers runs kubectl; a kubectl that ran and
            // failed is the node's answer.
            for via in std::iter::once(&via).chain(&fallback) {
                let (via_app, via_id) = inputs.machine(via)?;
                match c.exec(&via_app, &via_id, &req).await {
                    Ok(out) if out.exit_code == 0 => return Ok(Output::Done),
                    Ok(out) => return Err(exec_failed(node, via_id, "k3s kubectl taint", &out)),
                    Err(e) => {
                        let why = crate::errors::chain(&e);
                        tracing::debug!(%node, machine = %via_id, error = %why, "exec failed; trying another server");
                        tried.push(ExecFailure {
                            machine: via_id,
                            why,
                        });
                    }
                }
            }
            Err(Error::NoExec {
                node: node.to_string(),
                k3s_node,
                tried,
            })
        }
        Action::Cordon { machine, via } => {
            let (app, machine) = inputs.machine(&machine)?;
            let via = inputs.machine(&via)?;
            let k3s_node = k3s::k3s_node_name(&machine, &app);
            let req = exec_request(k3s::cordon_command(&k3s_node));
            kubectl_answered(ctx, node, &via, &req, "k3s kubectl cordon", |out| {
                out.exit_code == 0 || k3s::node_not_found(out)
            })
            .await
        }
        Action::Uncordon { machine, via } => {
            let (app, machine) = inputs.machine(&machine)?;
            let via = inputs.machine(&via)?;
            let k3s_node = k3s::k3s_node_name(&machine, &app);
            let req = exec_request(k3s::uncordon_command(&k3s_node));
            kubectl_answered(ctx, node, &via, &req, "k3s kubectl uncordon", |out| {
                out.exit_code == 0
            })
            .await
        }
        Action::SetMetadata {
            machine,
            key,
            value,
        } => {
            let (app, id) = inputs.machine(&machine)?;
            match value {
                Some(value) => c
                    .set_metadata(&app, &id, &key, &value)
                    .await
                    .map_err(fly_err(format!(
                        "node {node}: setting {key}={value} on machine {id}"
                    )))?,
                None => c
                    .delete_metadata(&app, &id, &key)
                    .await
                    .map_err(fly_err(format!(
                        "node {node}: deleting {key} of machine {id}"
                    )))?,
            }
            Ok(Output::Done)
        }
        Action::Drain { machine, via } => {
            let (app, machine) = inputs.machine(&machine)?;
            let via = inputs.machine(&via)?;
            let k3s_node = k3s::k3s_node_name(&machine, &app);
            let mut req = exec_request(k3s::drain_command(&k3s_node));
            req.timeout = Some(k3s::DRAIN_CALL_SECS + 10);
            let deadline = Instant::now() + ctx.options.k3s_timeout;
            loop {
                let out = c
                    .exec(&via.0, &via.1, &req)
                    .await
                    .map_err(fly_err(format!("node {node}: draining {k3s_node}")))?;
                if out.exit_code == 0 || k3s::node_not_found(&out) {
                    return Ok(Output::Done);
                }
                // An eviction a PodDisruptionBudget refuses keeps failing until the budget
                // allows it: call again until the run's deadline, then say why.
                if Instant::now() + ctx.options.poll > deadline {
                    return Err(exec_failed(node, via.1, "k3s kubectl drain", &out));
                }
                tracing::info!(%node, why = %k3s::first_line(&out.stderr), "drain not finished; trying again");
                tokio::time::sleep(ctx.options.poll).await;
            }
        }
        Action::DeleteNode { machine, via } => {
            let (app, machine) = inputs.machine(&machine)?;
            let via = inputs.machine(&via)?;
            let k3s_node = k3s::k3s_node_name(&machine, &app);
            let req = exec_request(k3s::delete_node_command(&k3s_node));
            kubectl_answered(ctx, node, &via, &req, "k3s kubectl delete node", |out| {
                out.exit_code == 0
            })
            .await
        }
        Action::RemoveMember { id, name, via } => {
            let via = inputs.machine(&via)?;
            let deadline = Instant::now() + ctx.options.k3s_timeout;
            remove_member(ctx, node, &via, &id, &name, deadline).await?;
            Ok(Output::Done)
        }
        Action::RemoveMembersOf { app, machines, via } => {
            let via = inputs.machine(&via)?;
            let gone = machines
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let req = exec_request(crate::status::members_command());
            let deadline = Instant::now() + ctx.options.k3s_timeout;
            let report = loop {
                let why = match c.exec(&via.0, &via.1, &req).await {
                    Ok(out) => match crate::status::parse_members(&out) {
                        Ok(report) => break report,
                        Err(why) => why,
                    },
                    Err(e) => crate::errors::chain(&e),
                };
                // As for a removal: etcd's temporary answers and a busy exec are asked again
                // until the deadline; anything else is final.
                if Instant::now() + ctx.options.poll > deadline
                    || !(crate::membership::is_retryable(&why) || why.contains("exec"))
                {
                    return Err(Error::MemberList {
                        node: node.to_string(),
                        machine: via.1,
                        gone,
                        why,
                    });
                }
                tracing::info!(%node, %why, "etcd member list not read yet; asking again");
                tokio::time::sleep(ctx.options.poll).await;
            };
            for m in crate::plan::replace::members_of(&report.members, &app, &machines) {
                tracing::info!(%node, member = %m.id, name = %m.name, "an etcd member of a destroyed machine is still listed");
                remove_member(ctx, node, &via, &m.id, &m.name, deadline).await?;
            }
            Ok(Output::Done)
        }
        Action::WaitMemberHealthy { machine, via } => {
            let (app, machine) = inputs.machine(&machine)?;
            let via = inputs.machine(&via)?;
            let k3s_node = k3s::k3s_node_name(&machine, &app);
            let req = exec_request(crate::status::members_command());
            let started = Instant::now();
            let deadline = started + ctx.options.k3s_timeout;
            loop {
                let last = match c.exec(&via.0, &via.1, &req).await {
                    Ok(out) => match crate::status::parse_members(&out) {
                        Ok(report) => match report.members.iter().find(|m| {
                            crate::status::member_node(&m.name) == Some(k3s_node.as_str())
                        }) {
                            Some(m) if m.healthy && !m.learner => return Ok(Output::Done),
                            Some(m) if m.learner => "a learner (not promoted yet)".to_string(),
                            Some(m) => {
                                format!("unhealthy: {}", m.error.as_deref().unwrap_or("no answer"))
                            }
                            None => format!(
                                "no member named after it among {} member(s)",
                                report.members.len()
                            ),
                        },
                        Err(why) => why,
                    },
                    Err(e) => crate::errors::chain(&e),
                };
                if Instant::now() + ctx.options.poll > deadline {
                    return Err(Error::MemberNotHealthy {
                        node: node.to_string(),
                        k3s_node,
                        last,
                        waited: started.elapsed(),
                    });
                }
                tokio::time::sleep(ctx.options.poll).await;
            }
        }
        Action::MarkReady { machine } => {
            let (app, id) = inputs.machine(&machine)?;
            c.set_metadata(&app, &id, META_READY, "true")
                .await
                .map_err(fly_err(format!("node {node}: marking machine {id} ready")))?;
            Ok(Output::Done)
        }
        Action::DestroyMachine { machine } => {
            let (app, id) = inputs.machine(&machine)?;
            let what = format!("destroying machine {id} in app {app}");
            let started = Instant::now();
            let deadline = started + ctx.options.started_timeout;
            // A lease a killed run left (a 409) is waited out (see `lease::wait_out`).
            loop {
                match c.destroy_machine(&app, &id, None).await {
                    Ok(()) => break,
                    Err(e) if e.status_code() == Some(409) => {
                        lease::wait_out(c, node, &app, &id, started, deadline, e, &what).await?;
                    }
                    Err(e) => return Err(fly_err(what)(e)),
                }
            }
            let deadline = Instant::now() + ctx.options.started_timeout;
            c.wait(&app, &id, MachineState::Destroyed, None, deadline)
                .await
                .map_err(fly_err(format!(
                    "waiting for the destroy of machine {id} in app {app}"
                )))?;
            Ok(Output::Done)
        }
        Action::DeleteVolume {
            app, volume: id, ..
        } => {
            c.delete_volume(&app, &id)
                .await
                .map_err(fly_err(format!("deleting volume {id} in app {app}")))?;
            Ok(Output::Done)
        }
        Action::DeleteSecret { app, name } => {
            c.delete_secret(&app, &name)
                .await
                .map_err(fly_err(format!("deleting secret {name} in app {app}")))?;
            Ok(Output::Done)
        }
        Action::DeleteApp { app } => {
            // Not forced: every machine is destroyed by now, and a machine that appeared
            // since the observation makes the delete fail instead of vanishing with it.
            c.delete_app(&app, false)
                .await
                .map_err(fly_err(format!("deleting app {app} in app {app}")))?;
            Ok(Output::Done)
        }
    }
}

/// Updates machine `id` to `config` under a lease, as flyctl does (reference
/// fly-machines-api.md §2.3.2): acquire (waiting out a lease someone else holds, see
/// [`lease`]), send the update with the nonce, wait until the new version (`instance_id` of
/// the update's answer) is `started`, release. The lease is refreshed in the background
/// meanwhile and released also when the update or the wait failed.
async fn update_machine(
    ctx: &Ctx,
    node: &str,
    app: &str,
    id: &str,
    config: crate::fly::types::MachineConfig,
) -> Result<Output, Error> {
    let c = &ctx.client;
    let held = lease::acquire(
        c,
        node,
        app,
        id,
        ctx.options.lease_ttl,
        "fks-bootstrap update",
        Instant::now() + ctx.options.started_timeout,
    )
    .await?;
    let result = async {
        let req = crate::fly::types::UpdateMachineRequest {
            config,
            // The join token reaches the node only as a file, as on create.
            skip_secrets: Some(true),
            ..Default::default()
        };
        let m = c
            .update_machine(app, id, &req, Some(held.nonce()))
            .await
            .map_err(fly_err(format!(
                "node {node}: updating machine {id} in app {app}"
            )))?;
        let deadline = Instant::now() + ctx.options.started_timeout;
        match c
            .wait(
                app,
                id,
                MachineState::Started,
                Some(&m.instance_id),
                deadline,
            )
            .await
        {
            Ok(_) => {}
            Err(FlyError::WaitTimeout { last, waited, .. }) => {
                return Err(Error::Stuck {
                    node: node.to_string(),
                    app: app.to_string(),
                    machine: id.to_string(),
                    state: last.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
                    waited,
                })
            }
            Err(e) => {
                return Err(fly_err(format!(
                    "node {node}: waiting for updated machine {id}"
                ))(e))
            }
        }
        c.get_machine(app, id)
            .await
            .map_err(fly_err(format!("node {node}: reading machine {id}")))
    }
    .await;
    held.release(c, node).await;
    Ok(Output::Machine(Box::new(result?)))
}

/// Removes etcd member `id` (named `name`, empty when it never started) through `via`'s etcd
/// (`node etcd remove`). etcd refuses a reconfiguration for a few seconds after a member
/// started, and exec fails while the survivor is busy: both are asked again until `deadline`
/// (the step's). A member removed already is not an error.
async fn remove_member(
    ctx: &Ctx,
    node: &str,
    via: &(String, String),
    id: &str,
    name: &str,
    deadline: Instant,
) -> Result<(), Error> {
    let member = if name.is_empty() {
        id.to_string()
    } else {
        format!("{id} ({name})")
    };
    let req = exec_request(crate::membership::remove_command(id));
    loop {
        let why = match ctx.client.exec(&via.0, &via.1, &req).await {
            Ok(out) => match crate::membership::parse_remove(&out) {
                Ok(report) => {
                    match &report.removed {
                        Some(m) => {
                            tracing::info!(%node, member = %m.id, name = %m.name, left = report.members.len(), "etcd member removed")
                        }
                        None => {
                            tracing::info!(%node, %member, "etcd member not there (removed already)")
                        }
                    }
                    return Ok(());
                }
                Err(why) => why,
            },
            Err(e) => crate::errors::chain(&e),
        };
        if Instant::now() + ctx.options.poll > deadline
            || !(crate::membership::is_retryable(&why) || why.contains("exec"))
        {
            return Err(Error::RemoveMember {
                node: node.to_string(),
                member,
                machine: via.1.clone(),
                why,
            });
        }
        tracing::info!(%node, %member, %why, "etcd member removal not done yet; asking again");
        tokio::time::sleep(ctx.options.poll).await;
    }
}

/// A kubectl call on `machine` that exited non-zero, with the first line of its stderr.
/// Runs the kubectl call `req` on `via` until `done` accepts its answer. The API answers 503
/// while its datastore elects a leader (a server was just lost or restarted, e.g. by an update
/// or a run killed during one): such answers are asked again until the k3s deadline; any
/// other failure is final.
async fn kubectl_answered(
    ctx: &Ctx,
    node: &str,
    via: &(String, String),
    req: &crate::fly::ExecRequest,
    program: &str,
    done: impl Fn(&ExecResponse) -> bool,
) -> Result<Output, Error> {
    let deadline = Instant::now() + ctx.options.k3s_timeout;
    loop {
        let out = ctx
            .client
            .exec(&via.0, &via.1, req)
            .await
            .map_err(fly_err(format!(
                "node {node}: {program} on machine {}",
                via.1
            )))?;
        if done(&out) {
            return Ok(Output::Done);
        }
        if !k3s::is_unavailable(&out) || Instant::now() + ctx.options.poll > deadline {
            return Err(exec_failed(node, via.1.clone(), program, &out));
        }
        tracing::info!(%node, why = %k3s::first_line(&out.stderr), "the API is unavailable; {program} again");
        tokio::time::sleep(ctx.options.poll).await;
    }
}

fn exec_failed(node: &str, machine: String, program: &str, out: &ExecResponse) -> Error {
    Error::Exec {
        node: node.to_string(),
        machine,
        program: program.to_string(),
        code: out.exit_code,
        stderr: k3s::first_line(&out.stderr),
    }
}

/// The one live, unattached volume named `name` in `app` that this run does not know (made
/// by an interrupted run after this one observed), claimed for the caller. Volume creates of
/// one app run one at a time, so no other step of this run can be making it.
async fn adopt_volume(ctx: &Ctx, app: &str, name: &str) -> Option<Volume> {
    let vols = ctx.client.list_volumes(app).await.ok()?;
    let mut known = lock(&ctx.volumes);
    let v = vols.into_iter().find(|v| {
        v.name == name
            && !v.state.is_being_destroyed()
            && v.attached_machine_id.as_deref().is_none_or(str::is_empty)
            && !known.contains(&v.id)
    })?;
    known.insert(v.id.clone());
    Some(v)
}

/// The one live machine of `cluster` for node `name` in `app`, when a create failed because an
/// interrupted run made it meanwhile.
async fn adopt_machine(c: &Client, app: &str, cluster: &str, name: &str) -> Option<Machine> {
    let mut filter = MachineListFilter::metadata(META_CLUSTER, cluster);
    filter
        .metadata
        .insert(META_NODE.to_string(), name.to_string());
    let found: Vec<Machine> = c
        .list_machines(app, &filter)
        .await
        .ok()?
        .into_iter()
        .filter(|m| !matches!(m.state, MachineState::Destroyed | MachineState::Destroying))
        .collect();
    match <[Machine; 1]>::try_from(found) {
        Ok([m]) => Some(m),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests;
// The Fly client's scripted test server, compiled a second time here: `fly` keeps it private
// and the k3s steps need an API that answers exec (the lab runs no guests yet).
#[cfg(test)]
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../fly/testserver.rs"]
mod testserver;
