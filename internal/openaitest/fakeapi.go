// Package openaitest is an honest fake of the OpenAI chat-completions API for
// gptbatch's tests, benchmarks and load harness.
//
// It answers POST /v1/chat/completions the way the real API does: the same
// success and error bodies, the same validation of the request, prompt
// tokens counted with the model's own tiktoken encoding, prompt caching,
// and rate limits enforced as the API enforces them (token buckets that
// start full and refill continuously), with the x-ratelimit-* and
// retry-after headers a client steers by. It can also inject failures at
// random and on request.
//
// It also answers POST /v1/embeddings and POST /v1/responses with the same
// limits and failures (see EmbeddingVector, Endpoint), and the Files and
// Batch APIs (/v1/files, /v1/batches; see BatchConfig), whose lines are
// answered by the same code as the synchronous endpoints but counted apart
// (BatchStats).
//
// The answer to a request is "answer: " followed by the text of its last
// user message, cut to the request's maximum output tokens. The last user
// message may also ask for a failure:
//
//   - "__status_400__": a 400 invalid_request_error;
//   - "__status_500__": a 500 server_error, every time;
//   - "__hang__": no answer until Config.Hang is closed, the client goes
//     away or the server is closed.
//
// Or another answer (see choices.go): "__refusal__" a refusal,
// "__content_filter__" an answer the content filter stopped.
package openaitest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Failure is a kind of failure the server injects.
type Failure int

// The kinds of injected failure.
const (
	// Fail500 answers 500 with the API's server_error body.
	Fail500 Failure = iota
	// Fail503 answers 503 "The engine is currently overloaded".
	Fail503
	// FailDrop closes the connection without sending a response.
	FailDrop
	// FailBadBody answers 200 with a JSON body cut in half.
	FailBadBody
	// FailSlow answers correctly, but only after Config.Slow more.
	FailSlow
)

// String returns the failure's constant name.
func (f Failure) String() string {
	switch f {
	case Fail500:
		return "Fail500"
	case Fail503:
		return "Fail503"
	case FailDrop:
		return "FailDrop"
	case FailBadBody:
		return "FailBadBody"
	case FailSlow:
		return "FailSlow"
	}
	return "Failure(" + strconv.Itoa(int(f)) + ")"
}

// Organization is the organization that rate-limit messages name.
const Organization = "org-fake"

// DefaultMaxOutput is the output a request is charged against TPM when it
// sets neither max_completion_tokens nor max_tokens.
const DefaultMaxOutput = 4096

// Config configures a Server. The zero value is a server that answers
// every valid request at once, without limits or failures.
type Config struct {
	// Latency and Jitter delay every successful answer by Latency plus a
	// uniform random duration in [0, Jitter).
	Latency, Jitter time.Duration
	// RPM and TPM are the requests and tokens a minute allowed; 0 means
	// unlimited. Each is a token bucket, full at start and refilled
	// continuously at limit/60 a second. A request is charged at arrival
	// (once its body is read: the time the fake then takes to count its
	// tokens does not move the charge) its prompt tokens plus its maximum
	// output tokens (max_completion_tokens, else max_tokens, else
	// DefaultMaxOutput), and nothing is refunded. A refused request is
	// charged nothing.
	RPM, TPM int
	// Window, if positive, replaces the buckets with fixed windows of this
	// length, counted from New, each allowing RPM*Window/1m requests and
	// TPM*Window/1m tokens (at least 1). In this mode the x-ratelimit-limit-*
	// headers report the allowance of a window.
	Window time.Duration
	// FailRate is the probability that a request which passed validation
	// and the rate limits fails; the kind of failure is drawn uniformly
	// from Failures (default Fail500, Fail503, FailDrop and FailBadBody).
	FailRate float64
	Failures []Failure
	// Slow is the extra delay of FailSlow (default 2s).
	Slow time.Duration
	// Seed seeds the server's randomness: latency, failures and ids.
	Seed int64
	// Key, if set, is the API key every request must send as
	// "Authorization: Bearer <Key>"; others get the API's 401.
	Key string
	// Hang, if set, holds requests whose last user message contains
	// "__hang__" until it is closed. Without it, such requests are held
	// until the client goes away or the server is closed.
	Hang <-chan struct{}
	// Now is the clock of the rate limits, Stats and Recorded (default
	// time.Now). Latency and Hang are waited for in real time.
	Now func() time.Time
	// FlexUnavailable is the probability that a request with
	// service_tier "flex" which passed the rate limits is refused with
	// the API's 429 resource_unavailable.
	FlexUnavailable float64
	// Batch configures the Files and Batch APIs.
	Batch BatchConfig
	// Snapshots are the model names answers report, by the model asked
	// for, over DatedModel's: a snapshot newer than any gptbatch knows.
	Snapshots map[string]string
	// Structured makes a share of the answers to structured-output
	// requests invalid (see structured.go).
	Structured StructuredConfig
}

// Stats counts what a Server has seen.
type Stats struct {
	// Requests counts every request that arrived.
	Requests int
	// Succeeded counts the 200 answers with a whole body.
	Succeeded int
	// RateLimited counts the 429 answers.
	RateLimited int
	// Injected counts the failures injected at random and those asked
	// for with "__status_500__". A FailSlow answer counts here and in
	// Succeeded; a FailBadBody answer only here.
	Injected int
	// BadRequests counts the other 4xx answers: invalid requests, a
	// missing or wrong key, unknown URLs.
	BadRequests int
	// PromptTokens, CompletionTokens and CachedTokens add up the usage the
	// successful answers reported.
	PromptTokens, CompletionTokens, CachedTokens int64
	// MaxInFlight is the most requests the server was handling at once.
	MaxInFlight int
	// First is when the first request arrived; Last is when the last
	// response was sent.
	//
	// A request is counted, and leaves the in-flight count, just before its
	// response is sent: a client that has its answer finds it here.
	First, Last time.Time
}

// Recorded is one request as the server received it.
type Recorded struct {
	// Body is the request body exactly as received (nil for a file
	// upload, whose content is the file's: see File).
	Body []byte
	// Header is the request's header.
	Header http.Header
	// Status is the status answered; 0 while the request is in flight, or
	// if no response was sent (a dropped connection, a client that left).
	// It is set before the response is sent.
	Status int
	// Method and Path are the request's method and URL path.
	Method, Path string
	// At is when the request arrived.
	At time.Time
}

// Server is a fake OpenAI API. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	ts       *httptest.Server // nil for NewUnstarted
	lim      *limiter
	done     chan struct{} // closed by Close: releases held requests
	closeOne sync.Once

	mu sync.Mutex
	// Guarded by mu.
	rng      *rand.Rand
	stats    Stats
	inFlight int
	recorded []Recorded
	seen     map[string]bool // prompts answered, by model and messages
	// structured is what structured answers were given (structured.go).
	structured structuredState
	changes    changes // wakes WaitArrivals and WaitInFlight

	ext ext // the endpoints beyond chat completions

	// stall, if set, runs between a request's receipt and the decision on
	// its charge, where parsing it and counting its tokens take their time:
	// a test stands in with it for a slow count (a cold encoder).
	stall func()
}

// New starts a Server listening on 127.0.0.1 on a port of its own. Close
// it when done.
func New(cfg Config) *Server {
	s := NewUnstarted(cfg)
	s.ts = httptest.NewServer(s)
	return s
}

// NewUnstarted returns a Server that listens nowhere, for a load harness
// that serves Handler on a listener of its own. URL returns "".
func NewUnstarted(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Failures) == 0 {
		cfg.Failures = []Failure{Fail500, Fail503, FailDrop, FailBadBody}
	}
	if cfg.Slow <= 0 {
		cfg.Slow = 2 * time.Second
	}
	// Build the common encoder now, so the first request is not slow and
	// tiktoken's loader is set on the caller's goroutine.
	if _, err := o200kEncoder(); err != nil {
		panic(err)
	}
	seed := uint64(cfg.Seed)
	return &Server{
		cfg:  cfg,
		lim:  newLimiter(cfg.RPM, cfg.TPM, cfg.Window, cfg.Now()),
		done: make(chan struct{}),
		rng:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		seen: map[string]bool{},
	}
}

// URL is the server's base URL including "/v1", as go-openai's BaseURL
// wants it.
func (s *Server) URL() string {
	if s.ts == nil {
		return ""
	}
	return s.ts.URL + "/v1"
}

// Close releases every held request and shuts the server down, waiting for
// the requests in flight to finish.
func (s *Server) Close() {
	s.closeOne.Do(func() { close(s.done) })
	if s.ts != nil {
		s.ts.Close()
	}
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s }

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Requests returns every request received, in order of arrival.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Recorded, len(s.recorded))
	copy(out, s.recorded)
	return out
}

// outcome is how a request ended, for Stats.
type outcome int

const (
	gone outcome = iota // no response sent
	succeeded
	rateLimited
	injected
	badRequest
)

// exchange is one request being answered.
type exchange struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	idx     int       // in s.recorded
	arrived time.Time // real time, for openai-processing-ms
	// received is Config.Now once the whole body was read: the time the
	// request is charged at, however long counting its tokens then takes.
	received time.Time
	model    string // as requested, once known
	status   int
	outcome  outcome
	slow     bool // FailSlow was injected into a successful answer
	limits   bool // the x-ratelimit-* headers are set
	settled  bool
	usage    usage
}

// ServeHTTP answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{s: s, w: w, r: r, arrived: time.Now()}
	s.mu.Lock()
	now := s.cfg.Now()
	x.idx = len(s.recorded)
	s.recorded = append(s.recorded, Recorded{Header: r.Header.Clone(), At: now, Method: r.Method, Path: r.URL.Path})
	s.stats.Requests++
	if s.stats.First.IsZero() {
		s.stats.First = now
	}
	s.inFlight++
	s.stats.MaxInFlight = max(s.stats.MaxInFlight, s.inFlight)
	s.changes.changed()
	s.mu.Unlock()
	defer x.settle() // if the exchange ended without a response
	x.serve()
}

// settle records how the exchange ended, once. It runs just before the
// response is sent, so that a client which has its answer finds it in
// Stats and no longer in flight.
func (x *exchange) settle() {
	if x.settled {
		return
	}
	x.settled = true
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight--
	s.changes.changed()
	s.stats.Last = s.cfg.Now()
	s.recorded[x.idx].Status = x.status
	x.countOutcome()
	switch x.outcome {
	case succeeded:
		if x.slow {
			s.stats.Injected++
		}
		s.stats.Succeeded++
		s.stats.PromptTokens += int64(x.usage.PromptTokens)
		s.stats.CompletionTokens += int64(x.usage.CompletionTokens)
		s.stats.CachedTokens += int64(x.usage.PromptTokensDetails.CachedTokens)
	case rateLimited:
		s.stats.RateLimited++
	case injected:
		s.stats.Injected++
	case badRequest:
		s.stats.BadRequests++
	}
}

func (x *exchange) serve() {
	if x.route() {
		return
	}
	s, r := x.s, x.r
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		x.fail(http.StatusNotFound, badRequest, apiError{
			Message: fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path),
			Type:    "invalid_request_error",
		})
		return
	}
	if s.cfg.Key != "" && !x.authorized() {
		return
	}
	body, ok := x.readBody(true)
	if !ok {
		x.status = 0 // the client went away mid-body
		return
	}

	req, apiErr := parseRequest(body)
	if req != nil {
		x.model = req.Model
	}
	if apiErr != nil {
		x.fail(http.StatusBadRequest, badRequest, *apiErr)
		return
	}
	enc, err := encoderFor(req.Model)
	if err != nil {
		x.fail(http.StatusInternalServerError, injected, serverError)
		return
	}
	prompt := req.promptTokens(enc)
	maxOut := req.maxOutput()
	charge := prompt + cmp.Or(maxOut, DefaultMaxOutput)*req.choices()

	last := req.lastUserText()
	d, ok := x.admit(charge, req.ServiceTier == "flex", last)
	if !ok {
		return
	}
	resp := x.answer(req, enc, prompt, maxOut)
	x.finish(resp, resp.Usage, last, d)
}

// afterChan is a channel closed after d: at once if d <= 0.
func afterChan(d time.Duration) <-chan struct{} {
	c := make(chan struct{})
	if d <= 0 {
		close(c)
		return c
	}
	time.AfterFunc(d, func() { close(c) })
	return c
}

// wait waits for c, and reports false if the client went away or the
// server was closed first. A nil c is waited for until then.
func (x *exchange) wait(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-x.r.Context().Done():
	case <-x.s.done:
	}
	return false
}

// draw decides at random whether the request fails, how, and how long a
// successful answer waits.
func (s *Server) draw() (kind Failure, fails bool, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.FailRate > 0 && s.rng.Float64() < s.cfg.FailRate {
		kind, fails = s.cfg.Failures[s.rng.IntN(len(s.cfg.Failures))], true
	}
	delay = s.cfg.Latency
	if s.cfg.Jitter > 0 {
		delay += time.Duration(s.rng.Int64N(int64(s.cfg.Jitter)))
	}
	return kind, fails, delay
}

const idChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// randomID is prefix and n random letters and digits.
func (s *Server) randomID(prefix string, n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := []byte(prefix)
	for range n {
		b = append(b, idChars[s.rng.IntN(len(idChars))])
	}
	return string(b)
}

// authorized checks the request's key and answers 401 if it is not Key.
func (x *exchange) authorized() bool {
	h := x.r.Header.Get("Authorization")
	key, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || strings.TrimSpace(key) == "" {
		x.fail(http.StatusUnauthorized, badRequest, apiError{
			Message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
			Type:    "invalid_request_error",
		})
		return false
	}
	key = strings.TrimSpace(key)
	if key == x.s.cfg.Key {
		return true
	}
	x.fail(http.StatusUnauthorized, badRequest, apiError{
		Message: "Incorrect API key provided: " + maskKey(key) + ". You can find your API key at https://platform.openai.com/account/api-keys.",
		Type:    "invalid_request_error",
		Code:    "invalid_api_key",
	})
	return false
}

// maskKey hides all of key but its first 5 and last 2 characters, as the
// API does; a key too short to show any of it is all stars.
func maskKey(key string) string {
	if len(key) < 12 {
		return strings.Repeat("*", len(key))
	}
	return key[:5] + strings.Repeat("*", len(key)-7) + key[len(key)-2:]
}

// limitHeaders sets the x-ratelimit-* headers of the configured limits.
func (x *exchange) limitHeaders(v verdict) {
	x.limits = true
	h := x.w.Header()
	set := func(name string, l limitState) {
		h.Set("x-ratelimit-limit-"+name, strconv.Itoa(l.limit))
		h.Set("x-ratelimit-remaining-"+name, strconv.Itoa(l.remaining))
		h.Set("x-ratelimit-reset-"+name, FormatDuration(l.reset))
	}
	if v.reqOn {
		set("requests", v.req)
	}
	if v.tokOn {
		set("tokens", v.tok)
	}
}

// rateLimited answers 429 for a refused request.
func (x *exchange) rateLimited(v verdict, charge int) {
	const more = "Visit https://platform.openai.com/account/rate-limits to learn more."
	if v.tooLarge {
		x.fail(http.StatusTooManyRequests, rateLimited, apiError{
			Message: fmt.Sprintf("Request too large for %s in organization %s on tokens per min (TPM): Limit %d, Requested %d. The input or output tokens must be reduced in order to run successfully. %s",
				x.model, Organization, v.tok.limit, charge, more),
			Type: "tokens",
			Code: "rate_limit_exceeded",
		})
		return
	}
	h := x.w.Header()
	h.Set("retry-after", strconv.FormatInt(int64(math.Ceil(v.wait.Seconds())), 10))
	h.Set("retry-after-ms", strconv.FormatInt(int64(math.Ceil(float64(v.wait)/float64(time.Millisecond))), 10))
	what, limit, requested := "requests per min (RPM)", v.req.limit, 1
	if v.kind == "tokens" {
		what, limit, requested = "tokens per min (TPM)", v.tok.limit, charge
	}
	x.fail(http.StatusTooManyRequests, rateLimited, apiError{
		Message: fmt.Sprintf("Rate limit reached for %s in organization %s on %s: Limit %d, Used %d, Requested %d. Please try again in %s. %s",
			x.model, Organization, what, limit, v.used, requested, FormatDuration(v.wait), more),
		Type: v.kind,
		Code: "rate_limit_exceeded",
	})
}

// FormatDuration formats d as the API's x-ratelimit-reset-* headers and
// rate-limit messages do: Go's notation, rounded up to the millisecond
// ("6m0s", "1s", "120ms", "1.5s", "0s").
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return ((d + time.Millisecond - 1) / time.Millisecond * time.Millisecond).String()
}

// apiError is the "error" object of the API's error bodies.
type apiError struct {
	Message string
	Type    string
	Param   string // "" is sent as null
	Code    string // "" is sent as null
}

var serverError = apiError{
	Message: "The server had an error while processing your request. Sorry about that!",
	Type:    "server_error",
}

func (e apiError) MarshalJSON() ([]byte, error) {
	orNull := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	return json.Marshal(struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}{e.Message, e.Type, orNull(e.Param), orNull(e.Code)})
}

// fail answers status with the error body of e.
func (x *exchange) fail(status int, o outcome, e apiError) {
	body, err := json.MarshalIndent(map[string]apiError{"error": e}, "", "    ")
	if err != nil {
		panic(err)
	}
	x.outcome = o
	x.write(status, body)
}

// write sends the response with the headers every response carries.
func (x *exchange) write(status int, body []byte) {
	h := x.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-request-id", x.s.randomID("req_", 32))
	h.Set("openai-organization", Organization)
	h.Set("openai-version", "2020-10-01")
	h.Set("openai-processing-ms", strconv.FormatInt(time.Since(x.arrived).Milliseconds(), 10))
	if x.model != "" {
		h.Set("openai-model", x.s.datedModel(x.model))
	}
	if p := x.r.URL.Path; !x.limits && (p == PathChat || p == PathEmbeddings || p == PathResponses) {
		x.limitHeaders(x.s.lim.peek(x.s.cfg.Now()))
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.status = status
	x.settle()
	x.w.WriteHeader(status)
	x.w.Write(body) //nolint:errcheck // the client's problem if it left
}

// drop closes the connection without a response.
func (x *exchange) drop() {
	hj, ok := x.w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	x.settle()
	conn.Close()
}

// datedModel is the name the server's answers report for model:
// Config.Snapshots's, else DatedModel's.
func (s *Server) datedModel(model string) string {
	if name, ok := s.cfg.Snapshots[model]; ok {
		return name
	}
	return DatedModel(model)
}

// DatedModel is the snapshot name the API reports for model: gpt-4o-mini
// answers as gpt-4o-mini-2024-07-18. Names it does not know are returned
// unchanged.
func DatedModel(model string) string {
	switch model {
	case "gpt-4o-mini":
		return "gpt-4o-mini-2024-07-18"
	case "gpt-4o":
		return "gpt-4o-2024-08-06"
	case "gpt-4.1-mini":
		return "gpt-4.1-mini-2025-04-14"
	case "gpt-4.1-nano":
		return "gpt-4.1-nano-2025-04-14"
	case "gpt-4.1":
		return "gpt-4.1-2025-04-14"
	case "o3":
		return "o3-2025-04-16"
	case "o3-mini":
		return "o3-mini-2025-01-31"
	case "o4-mini":
		return "o4-mini-2025-04-16"
	case "gpt-5":
		return "gpt-5-2025-08-07"
	case "gpt-5-mini":
		return "gpt-5-mini-2025-08-07"
	case "gpt-5-nano":
		return "gpt-5-nano-2025-08-07"
	case "gpt-4":
		return "gpt-4-0613"
	case "gpt-4-turbo":
		return "gpt-4-turbo-2024-04-09"
	case "gpt-3.5-turbo":
		return "gpt-3.5-turbo-0125"
	}
	return model
}

// cacheKey names a prompt for prompt caching: same model, same messages.
func cacheKey(model string, messages json.RawMessage) string {
	var b bytes.Buffer
	b.WriteString(model)
	b.WriteByte(0)
	if json.Compact(&b, messages) != nil {
		b.Write(messages)
	}
	return b.String()
}
