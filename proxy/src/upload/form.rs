//! Multipart POST on the fast path: a file part's data moves client socket
//! -> pipe -> engine socket with splice(2). User space sees it once, through
//! MSG_PEEK, to find the next boundary, sniff and hash it; it is never
//! copied into a buffer of ours and out again.
//!
//! ```text
//!   server.rs parsed a plain HTTP/1.1 POST with Content-Length
//!   plan: route is backend.http (put or multipart mode), no spool, splice on;
//!         route, auth, multipart/form-data with a boundary, Content-Length
//!         within the route's multipart limit, the directory, admission --
//!         anything else: None, hyper serves the request (same answers)
//!   100 Continue if asked, then step by step over the body, each step looking
//!   at what is queued (the bytes read with the head first, then MSG_PEEK):
//!     framing (preamble, delimiters, part headers, form fields)
//!         -> fed to multipart::Scanner, exactly up to the end of a part's
//!            header block, then consumed
//!     a file's header block -> name, extension, declared type checked
//!         -> engine socket (RawPool): a chunked PUT {path}/{key}, or a chunked
//!            POST of a one-file form (multipart mode)
//!     a file's data, up to the next delimiter (or what may be its start)
//!         -> first SNIFF_LEN bytes sniffed, size counted, sha256 updated
//!         -> one chunk: its size line written, its bytes spliced
//!     the delimiter at the head of the queue -> last chunk, the engine's
//!         answer (2xx) stages the file -> framing again
//!   close delimiter (the epilogue is dropped) -> commit -> 201 {"objects"}
//! ```
//! The rules, limits and rejections are those of `upload::multipart` (the
//! scanner is the same); what differs is only where file bytes go. On any
//! failure the engine socket is closed mid-body, so the engine sees a
//! truncated chunked request, and files staged before are undone (put mode:
//! DELETE), as on the hyper path. The multipart mode has the hyper path's
//! caveat: some upload servers keep what they got of a truncated upload.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;
use rustix::net::RecvFlags;
use sha2::{Digest, Sha256};
use sluice_policy::{Backend, Checksum, HttpMode};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::multipart::{self, Bad, Event, PartHead, Scanner};
use super::peek;
use super::splice::{
    Body, Failed, UploadHead, engine_route, failed, reuse, send_continue, snippet, splice_rest,
};
use super::{
    FRAMING_BUDGET, MAX_FIELD_BYTES, MAX_FIELDS, Stored, StoredObject, commit, file_part,
    upload_dir, verify_head,
};
use crate::app::App;
use crate::backend::http::encode_key;
use crate::backend::upstream;
use crate::backend::{Staged, Undo, UndoGuard, Written};
use crate::error::Reject;
use crate::filters::SNIFF_LEN;
use crate::gate::{self, Pass};
use crate::http1::chunked::size_line;
use crate::limits::{BodyError, Permit};
use crate::runtime::{Engine, RouteRt};
use crate::zerocopy::Lowat;

/// A POST the fast path takes: every check that needs no body byte has passed.
pub struct Plan {
    route: Arc<RouteRt>,
    engine: Arc<Engine>,
    mode: HttpMode,
    /// Where the files go: "" or "sub/dir/".
    dir: String,
    boundary: String,
    len: u64,
    expect_continue: bool,
    _permit: Permit,
}

/// None when hyper should serve the request (a route this path does not
/// take, or a check that fails: hyper then answers with the rejection).
pub fn plan(app: &App, pass: &Pass<'_>, h: &UploadHead<'_>, peer: SocketAddr) -> Option<Plan> {
    // A signed form's policy fields must be read and checked before its first
    // file byte: hyper's `upload::multipart` does that, this path does not.
    if pass.form.is_some() {
        return None;
    }
    let (engine, mode) = engine_route(pass)?;
    let route = pass.route.clone();
    if h.len > super::multipart_limit(&route.route.upload) {
        return None;
    }
    let boundary = multipart::boundary(std::str::from_utf8(h.content_type?).ok()?)?;
    let dir = upload_dir(pass.rel).ok()?;
    // A multipart engine stores files flat: hyper's path refuses the directory.
    if mode == HttpMode::Multipart && !dir.is_empty() {
        return None;
    }
    let permit = gate::admit(app, peer).ok()?;
    Some(Plan {
        mode,
        engine,
        route,
        dir,
        boundary,
        len: h.len,
        expect_continue: h.expect_continue,
        _permit: permit,
    })
}

impl Plan {
    /// The route, for the access log once the plan is spent.
    pub fn route(&self) -> Arc<RouteRt> {
        self.route.clone()
    }
}

/// Moves the body to the engine; true when part of it was spliced. `buf` holds
/// bytes read past the head; what is left in it afterwards belongs to the next request.
pub async fn run(
    app: &App,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    plan: Plan,
) -> Result<(Stored, bool), Failed> {
    send_continue(stream, plan.expect_continue && buf.is_empty()).await?;
    let mut d = Driver {
        app,
        client: stream,
        held: buf,
        left: plan.len,
        read: 0,
        started: Instant::now(),
        form: Form::new(&plan),
        file: None,
        staged: Vec::new(),
        spliced: false,
        plan: &plan,
    };
    match d.run().await {
        Ok(()) => {
            let spliced = d.spliced;
            let stored = commit(std::mem::take(&mut d.staged)).map_err(failed(Body::Read))?;
            Ok((stored, spliced))
        }
        Err(r) => Err(Failed {
            reject: r,
            body: if d.left == 0 {
                Body::Read
            } else {
                Body::Partial
            },
        }),
    }
}

/// What to do with the bytes at the head of the body.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Not enough to decide: wait for more.
    More,
    /// The first `n` bytes were fed to the scanner (or are the epilogue):
    /// consume them; a file part starts after them when `Some`.
    Consume(usize, Option<PartHead>),
    /// The first `n` bytes are the current file's data.
    Data(usize),
    /// The current file's data ended: its delimiter is next.
    FileEnd,
}

/// Which part the scanner's data events belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Preamble,
    Field,
    /// After a file: a delimiter comes next.
    Between,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Framing(Framing),
    /// In a file's data; it has been sniffed when true.
    File {
        sniffed: bool,
    },
    /// After the close delimiter.
    Done,
}

/// The synchronous half: looks at bytes, decides a step, keeps the rules.
struct Form {
    scanner: Scanner,
    /// "\r\n--" + boundary.
    delimiter: Vec<u8>,
    finder: memmem::Finder<'static>,
    state: State,
    /// Nothing fed yet: the body may open with the delimiter minus its CRLF.
    fresh: bool,
    events: Vec<Event>,
    preamble: usize,
    fields: u32,
    field_bytes: u64,
    /// The current file's bytes so far, and its hash.
    size: u64,
    hasher: Option<Sha256>,
    declared: String,
}

impl Form {
    fn new(plan: &Plan) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(plan.boundary.as_bytes());
        Self {
            scanner: Scanner::new(&plan.boundary, FRAMING_BUDGET as usize),
            finder: memmem::Finder::new(&delimiter).into_owned(),
            delimiter,
            state: State::Framing(Framing::Preamble),
            fresh: true,
            events: Vec::new(),
            preamble: 0,
            fields: 0,
            field_bytes: 0,
            size: 0,
            hasher: None,
            declared: String::new(),
        }
    }

    /// `b`: the next body bytes, as many as are queued (at most a window);
    /// `end`: they are the last of the body.
    fn decide(&mut self, b: &[u8], end: bool, route: &RouteRt) -> Result<Step, Reject> {
        match self.state {
            State::Done => Ok(Step::Consume(b.len(), None)),
            State::File { sniffed } => self.file_step(b, end, sniffed, route),
            State::Framing(_) => self.framing_step(b, end),
        }
    }

    fn ended_early(&self) -> Reject {
        Reject::MalformedMultipart(
            if self.fresh || self.state == State::Framing(Framing::Preamble) {
                "no boundary found"
            } else {
                "the body ended before the closing boundary"
            }
            .into(),
        )
    }

    fn file_step(
        &mut self,
        b: &[u8],
        end: bool,
        sniffed: bool,
        route: &RouteRt,
    ) -> Result<Step, Reject> {
        let rules = &route.route.upload;
        let found = self.finder.find(b);
        if found.is_none() && end {
            return Err(self.ended_early());
        }
        let data = match found {
            Some(j) => j,
            None => b.len() - multipart::partial_suffix(b, &self.delimiter),
        };
        if !sniffed {
            // The window: SNIFF_LEN bytes, or the whole file when shorter.
            if found.is_none() && data < SNIFF_LEN {
                return Ok(Step::More);
            }
            if rules.verify_content {
                verify_head(&route.allow, &self.declared, &b[..data.min(SNIFF_LEN)])?;
            }
            self.state = State::File { sniffed: true };
        }
        if data == 0 {
            return Ok(if found == Some(0) {
                Step::FileEnd
            } else {
                Step::More
            });
        }
        self.size += data as u64;
        if self.size > rules.max_file_size {
            return Err(Reject::FileTooLarge {
                limit: rules.max_file_size,
            });
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&b[..data]);
        }
        Ok(Step::Data(data))
    }

    fn framing_step(&mut self, b: &[u8], end: bool) -> Result<Step, Reject> {
        let d = self.delimiter.len();
        let dash = &self.delimiter[2..];
        // The next delimiter: where it starts and how long it is.
        let found = if self.fresh && b.len() >= dash.len() && b.starts_with(dash) {
            Some((0, dash.len()))
        } else if self.fresh && dash.starts_with(b) && !end {
            return Ok(Step::More);
        } else {
            self.finder.find(b).map(|j| (j, d))
        };
        let need_more = |this: &mut Self, upto: usize| -> Result<Step, Reject> {
            if upto > 0 {
                this.feed(&b[..upto])?;
                Ok(Step::Consume(upto, None))
            } else if end {
                Err(this.ended_early())
            } else {
                Ok(Step::More)
            }
        };
        let Some((j, dl)) = found else {
            let keep = multipart::partial_suffix(b, &self.delimiter);
            return need_more(self, b.len() - keep);
        };
        let rest = &b[j + dl..];
        if rest.len() < 2 {
            return need_more(self, j);
        }
        // "--": the close delimiter. Else padding, CRLF and a header block,
        // fed whole so that the scanner stops where the part's data starts.
        let upto = if rest.starts_with(b"--") {
            j + dl + 2
        } else if let Some(k) = memmem::find(rest, b"\r\n\r\n") {
            j + dl + k + 4
        } else if rest.len() > 2 * FRAMING_BUDGET as usize || end {
            b.len() // the scanner says what is wrong with it
        } else {
            return need_more(self, j);
        };
        let file = self.feed(&b[..upto])?;
        Ok(Step::Consume(upto, file))
    }

    /// Feeds framing bytes to the scanner and keeps the count of fields and
    /// preamble; returns the head of a file part that starts next.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<PartHead>, Reject> {
        self.fresh = false;
        self.scanner
            .feed(Bytes::copy_from_slice(bytes), &mut self.events)
            .map_err(|b| match b {
                Bad::HeadTooLarge => Reject::PartHeadersTooLarge {
                    limit: FRAMING_BUDGET,
                },
                Bad::Malformed(m) => Reject::MalformedMultipart(m.to_string()),
            })?;
        let mut file = None;
        for e in self.events.drain(..) {
            match (e, self.state) {
                (Event::Data(b), State::Framing(Framing::Preamble)) => {
                    self.preamble += b.len();
                    if self.preamble > FRAMING_BUDGET as usize {
                        return Err(Reject::PartHeadersTooLarge {
                            limit: FRAMING_BUDGET,
                        });
                    }
                }
                (Event::Data(b), _) => {
                    self.field_bytes += b.len() as u64;
                    if self.field_bytes > MAX_FIELD_BYTES {
                        return Err(Reject::FieldTooLarge {
                            limit: MAX_FIELD_BYTES,
                        });
                    }
                }
                (Event::PartEnd, _) => {}
                (Event::Head(h), _) if h.filename.is_none() => {
                    self.fields += 1;
                    if self.fields > MAX_FIELDS {
                        return Err(Reject::TooManyFields { limit: MAX_FIELDS });
                    }
                    self.field_bytes = 0;
                    self.state = State::Framing(Framing::Field);
                }
                (Event::Head(h), _) => file = Some(h),
                (Event::End, _) => self.state = State::Done,
            }
        }
        Ok(file)
    }

    /// A file part starts: its data comes next.
    fn start_file(&mut self, declared: &str, checksum: Checksum) {
        self.state = State::File { sniffed: false };
        self.size = 0;
        self.hasher = (checksum == Checksum::Sha256).then(Sha256::new);
        declared.clone_into(&mut self.declared);
    }
}

/// A file on its way to the engine.
struct File {
    key: String,
    declared: String,
    engine: TcpStream,
    /// A chunk's closing CRLF is still to be written.
    crlf: bool,
    /// Multipart mode: the closing boundary of the one-file form.
    suffix: Option<String>,
    undo: Option<Undo>,
    /// "POST http://engine/path", for errors.
    what: String,
}

/// The asynchronous half: where the bytes are, and where they go.
struct Driver<'a> {
    app: &'a App,
    plan: &'a Plan,
    client: &'a TcpStream,
    /// Bytes read with the head (or after it), not yet consumed: looked at
    /// before the socket.
    held: &'a mut BytesMut,
    /// Body bytes not yet consumed (in `held` or queued on the socket).
    left: u64,
    /// Body bytes consumed, for the minimum rate.
    read: u64,
    started: Instant,
    form: Form,
    file: Option<File>,
    staged: Vec<(Staged, StoredObject)>,
    spliced: bool,
}

/// Where a step's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Held,
    Socket,
}

impl Driver<'_> {
    async fn run(&mut self) -> Result<(), Reject> {
        let mut lowat = Lowat::new(self.client, self.app.settings.splice_window);
        loop {
            if self.left == 0 && self.form.state == State::Done {
                return if self.staged.is_empty() {
                    Err(Reject::NoFiles)
                } else {
                    Ok(())
                };
            }
            let (step, src) = self.look(&mut lowat).await?;
            match step {
                Step::More => unreachable!("look waits for more"),
                Step::Consume(n, file) => {
                    self.consume(src, n).await?;
                    if let Some(head) = file {
                        self.open(head).await?;
                    }
                }
                Step::Data(n) => self.data(src, n).await?,
                Step::FileEnd => self.finish().await?,
            }
        }
    }

    /// The next step, waiting for bytes as long as it takes to decide one.
    async fn look(&mut self, lowat: &mut Lowat<'_>) -> Result<(Step, Src), Reject> {
        let plan = self.plan;
        let route = &*plan.route;
        let pace = self.app.settings.pace;
        loop {
            if !self.held.is_empty() || self.left == 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(self.held.len());
                let end = n as u64 == self.left;
                match self.form.decide(&self.held[..n], end, route)? {
                    Step::More => self.read_more().await?,
                    s => return Ok((s, Src::Held)),
                }
                continue;
            }
            // File data: one wakeup per window, not per segment.
            let wake = match self.form.state {
                State::File { sniffed: true } => self.left,
                _ => 1,
            };
            let form = &mut self.form;
            let step = peek::peek(
                lowat,
                wake,
                self.left,
                pace,
                self.read,
                self.started,
                |b, end| match form.decide(b, end, route)? {
                    Step::More => Ok(None),
                    s => Ok(Some(s)),
                },
            )
            .await?;
            return Ok((step, Src::Socket));
        }
    }

    /// Reads more of the body after the bytes held (a step needs them together).
    async fn read_more(&mut self) -> Result<(), Reject> {
        let pace = self.app.settings.pace;
        // What is read past the body stays in `held` for the next request.
        self.held.reserve(8 * 1024);
        loop {
            tokio::time::timeout(pace.idle, self.client.readable())
                .await
                .map_err(|_| Reject::from(BodyError::Idle(pace.idle)))?
                .map_err(|e| Reject::ClientAborted(e.to_string()))?;
            match self.client.try_read_buf(self.held) {
                Ok(0) => {
                    return Err(Reject::ClientAborted(
                        "client closed before the end of the body".into(),
                    ));
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Reject::ClientAborted(e.to_string())),
            }
        }
    }

    /// Drops `n` bytes the scanner has seen.
    async fn consume(&mut self, src: Src, n: usize) -> Result<(), Reject> {
        self.left -= n as u64;
        self.read += n as u64;
        if src == Src::Held {
            self.held.advance(n);
            return Ok(());
        }
        let mut done = 0;
        while done < n {
            // They were peeked: they are queued, this does not wait.
            self.client
                .readable()
                .await
                .map_err(|e| Reject::ClientAborted(e.to_string()))?;
            let r = self.client.try_io(Interest::READABLE, || {
                // n was peeked, so it is at most a window.
                peek::with_window(n - done, |buf| {
                    let k = (n - done).min(buf.len());
                    rustix::net::recv(self.client, &mut buf[..k], RecvFlags::empty())
                        .map(|(_, k)| k)
                        .map_err(io::Error::from)
                })
            });
            match r {
                Ok(0) => {
                    return Err(Reject::ClientAborted(
                        "client closed before the end of the body".into(),
                    ));
                }
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Reject::ClientAborted(e.to_string())),
            }
        }
        Ok(())
    }

    /// A file part's head passed the scanner: checks, then the engine request.
    async fn open(&mut self, head: PartHead) -> Result<(), Reject> {
        let rules = &self.plan.route.route.upload;
        if self.staged.len() as u32 >= rules.max_files {
            return Err(Reject::TooManyFiles {
                limit: rules.max_files,
            });
        }
        let raw = head.filename.unwrap_or_default();
        let (key, declared) = file_part(&self.plan.route, &self.plan.dir, &raw, head.content_type)?;
        let Backend::Http {
            url,
            field_name,
            headers: extra,
            ..
        } = &self.plan.route.route.backend
        else {
            return Err(Reject::Storage("not an http backend".into()));
        };
        let engine = &self.plan.engine;
        let origin = &engine.origin;
        let mut headers: Vec<(&str, &[u8])> = vec![("transfer-encoding", b"chunked")];
        let (method, target, form_type, prefix, suffix, undo);
        match self.plan.mode {
            HttpMode::Put => {
                method = "PUT";
                target = format!("{}/{}", engine.path, encode_key(&key));
                form_type = None;
                prefix = None;
                suffix = None;
                undo = Some(Undo::HttpDelete {
                    client: self.plan.route.client.http.clone(),
                    uri: format!("{url}/{}", encode_key(&key)),
                    headers: extra.clone(),
                });
            }
            HttpMode::Multipart => {
                let boundary = format!("sluice-{}", uuid::Uuid::new_v4().simple());
                method = "POST";
                target = engine.path.clone();
                form_type = Some(format!("multipart/form-data; boundary={boundary}"));
                prefix = Some(format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {declared}\r\n\r\n",
                    field_name,
                    key.replace(['"', '\r', '\n'], "_"),
                ));
                suffix = Some(format!("\r\n--{boundary}--\r\n"));
                // A multipart engine has no standard delete: nothing to undo with.
                undo = None;
            }
        }
        headers.push((
            "content-type",
            form_type.as_deref().unwrap_or(&declared).as_bytes(),
        ));
        headers.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        let mut out = origin.head(method, &target, headers.iter().copied());
        if let Some(p) = &prefix {
            size_line(&mut out, false, p.len());
            out.extend_from_slice(p.as_bytes());
        }
        // The query stays out of errors and logs (it may carry a signature).
        let shown = target.split('?').next().unwrap_or_default();
        let what = format!("{method} http://{}{shown}", origin.authority);
        let timeout = self.app.remotes.timeout;
        // Nothing of the file is sent yet: a pooled socket the engine closed
        // just now gets one retry on a new connection.
        let mut attempt = 0;
        let engine = loop {
            let (mut s, pooled) = origin
                .connect(&self.app.raw, attempt > 0, self.app.remotes.connect_timeout)
                .await?;
            match send(&mut s, &out, timeout, &what).await {
                Ok(()) => break s,
                Err(Reject::Backend { .. }) if pooled && attempt == 0 => attempt += 1,
                Err(r) => return Err(r),
            }
        };
        self.form.start_file(&declared, rules.checksum);
        self.file = Some(File {
            key,
            declared,
            engine,
            crlf: prefix.is_some(),
            suffix,
            undo,
            what,
        });
        Ok(())
    }

    /// Sends `n` bytes of the current file as one chunk.
    async fn data(&mut self, src: Src, n: usize) -> Result<(), Reject> {
        let Some(f) = self.file.as_mut() else {
            return Err(Reject::Storage("file data without a file".into()));
        };
        let timeout = self.app.remotes.timeout;
        // The chunk's size line, on the stack: a step allocates nothing.
        let mut line = [0u8; 24];
        let len = {
            let mut w = &mut line[..];
            size_line(&mut w, f.crlf, n);
            24 - w.len()
        };
        f.crlf = true;
        if src == Src::Held {
            // Bytes read with the head: they go from here, with their size line.
            let mut out = line[..len].to_vec();
            out.extend_from_slice(&self.held[..n]);
            self.held.advance(n);
            self.left -= n as u64;
            self.read += n as u64;
            return send(&mut f.engine, &out, timeout, &f.what).await;
        }
        send(&mut f.engine, &line[..len], timeout, &f.what).await?;
        let what = || f.what.clone();
        splice_rest(
            self.app,
            self.client,
            &mut f.engine,
            self.read,
            n as u64,
            self.started,
            &what,
            true,
        )
        .await
        .map_err(|e| e.reject)?;
        self.left -= n as u64;
        self.read += n as u64;
        self.spliced = true;
        Ok(())
    }

    /// The current file's data ended: the last chunk, then the engine's answer.
    async fn finish(&mut self) -> Result<(), Reject> {
        let Some(mut f) = self.file.take() else {
            return Err(Reject::Storage("a file end without a file".into()));
        };
        self.form.state = State::Framing(Framing::Between);
        let mut out = Vec::with_capacity(128);
        if let Some(s) = &f.suffix {
            size_line(&mut out, f.crlf, s.len());
            out.extend_from_slice(s.as_bytes());
            f.crlf = true;
        }
        if f.crlf {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        let timeout = self.app.remotes.timeout;
        let what = &f.what;
        send(&mut f.engine, &out, timeout, what).await?;
        let head = match tokio::time::timeout(timeout, upstream::read_answer(&mut f.engine)).await {
            Err(_) => {
                return Err(Reject::BackendTimeout(format!(
                    "{what}: no answer within {timeout:?}"
                )));
            }
            Ok(Err(e)) => {
                return Err(Reject::Backend {
                    status: None,
                    message: format!("{what}: {e}"),
                });
            }
            Ok(Ok(h)) => h,
        };
        let status = head.status;
        // As on the hyper path: upload servers answer a stored form with 303 See Other.
        let see_other = self.plan.mode == HttpMode::Multipart && status == 303;
        if !(200..300).contains(&status) && !see_other {
            return Err(Reject::Backend {
                status: Some(status),
                message: format!("{what}: engine answered {status}: {}", snippet(&head)),
            });
        }
        reuse(self.app, &self.plan.engine.origin.authority, f.engine, head).await;
        let written = Written {
            size: self.form.size,
            sha256: self.form.hasher.take().map(|h| hex::encode(h.finalize())),
        };
        let obj = StoredObject {
            key: f.key,
            size: written.size,
            content_type: f.declared,
            sha256: written.sha256.clone(),
        };
        self.staged.push((
            Staged::Remote {
                written,
                undo: UndoGuard::new(f.undo),
            },
            obj,
        ));
        Ok(())
    }
}

/// Writes to the engine: its error is a 502, its not reading for `timeout` a 504.
async fn send(
    engine: &mut TcpStream,
    bytes: &[u8],
    timeout: Duration,
    what: &str,
) -> Result<(), Reject> {
    match tokio::time::timeout(timeout, engine.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Reject::Backend {
            status: None,
            message: format!("{what}: {e}"),
        }),
        Err(_) => Err(Reject::BackendTimeout(format!(
            "{what}: the engine read nothing for {timeout:?}"
        ))),
    }
}
