package openaitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The synchronous endpoints, as EndpointStats names them.
const (
	PathChat       = "/v1/chat/completions"
	PathEmbeddings = "/v1/embeddings"
	PathResponses  = "/v1/responses"
)

// EndpointStats counts the requests that reached one synchronous endpoint
// over HTTP. Lines answered inside a batch are not counted here (see
// BatchStats), so a test can tell that nothing reached the synchronous
// endpoints.
type EndpointStats struct {
	// Requests counts every request that arrived at the endpoint.
	Requests int
	// Succeeded counts its 200 answers with a whole body.
	Succeeded int
	// PromptTokens and CompletionTokens add up the usage its successful
	// answers reported (input and output tokens for /v1/responses).
	PromptTokens, CompletionTokens int64
	// Inputs counts the inputs of the valid embeddings requests.
	Inputs int
	// Base64 and Float count the valid embeddings requests that asked for
	// encoding_format base64, and those that asked for float or nothing.
	Base64, Float int
	// StoreOmitted, StoreTrue and StoreFalse count the valid responses
	// requests by what they sent as "store".
	StoreOmitted, StoreTrue, StoreFalse int
	// Flex counts the valid requests that asked for service_tier "flex"
	// and passed the rate limits; FlexUnavailable the 429
	// resource_unavailable answers among them.
	Flex, FlexUnavailable int
}

// ext is the state of everything beyond chat completions.
type ext struct {
	// Guarded by Server.mu.
	endpoints map[string]*EndpointStats

	mu sync.Mutex
	// Guarded by mu.
	files       map[string]*file
	fileOrder   []string // ids in upload order
	batches     map[string]*batch
	batchOrder  []string       // ids in creation order
	enqueued    map[string]int // tokens of the unfinished batches, by model
	createsLost int            // of BatchConfig.LoseCreates
	uploadsLost int            // of BatchConfig.LoseUploads
	batchStats  BatchStats
	cut         downloadCut
	hang        hang
	faults      faults
}

// endpoint returns the counts of path. It requires s.mu held.
func (s *Server) endpoint(path string) *EndpointStats {
	if s.ext.endpoints == nil {
		s.ext.endpoints = map[string]*EndpointStats{}
	}
	e := s.ext.endpoints[path]
	if e == nil {
		e = &EndpointStats{}
		s.ext.endpoints[path] = e
	}
	return e
}

// Endpoint returns the counts of the synchronous endpoint at path
// (PathChat, PathEmbeddings or PathResponses).
func (s *Server) Endpoint(path string) EndpointStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.endpoint(path)
}

// count updates the counts of x's endpoint under s.mu.
func (x *exchange) count(f func(e *EndpointStats)) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	f(x.s.endpoint(x.r.URL.Path))
}

// countOutcome adds a settled exchange to its endpoint's counts. It
// requires s.mu held.
func (x *exchange) countOutcome() {
	switch x.r.URL.Path {
	case PathChat, PathEmbeddings, PathResponses:
	default:
		return
	}
	if x.outcome != succeeded {
		return
	}
	e := x.s.endpoint(x.r.URL.Path)
	e.Succeeded++
	e.PromptTokens += int64(x.usage.PromptTokens)
	e.CompletionTokens += int64(x.usage.CompletionTokens)
}

// route answers the requests to every endpoint but chat completions, and
// reports whether it did. It counts the arrivals at chat completions too.
func (x *exchange) route() bool {
	r := x.r
	path, method := r.URL.Path, r.Method
	switch {
	case path == PathChat && method == http.MethodPost:
		x.count(func(e *EndpointStats) { e.Requests++ })
		return false
	case path == PathEmbeddings && method == http.MethodPost:
		x.count(func(e *EndpointStats) { e.Requests++ })
		if x.authorizedIfKey() {
			x.serveCall(x.s.parseEmbeddings)
		}
		return true
	case path == PathResponses && method == http.MethodPost:
		x.count(func(e *EndpointStats) { e.Requests++ })
		if x.authorizedIfKey() {
			x.serveCall(x.s.parseResponses)
		}
		return true
	case path == "/v1/files" || strings.HasPrefix(path, "/v1/files/"),
		path == "/v1/batches" || strings.HasPrefix(path, "/v1/batches/"):
		if !x.authorizedIfKey() {
			return true
		}
		if x.s.apiFault(x) {
			return true
		}
		if x.s.takeHang(x.r) {
			x.hung()
		}
		if strings.HasPrefix(path, "/v1/files") {
			return x.serveFiles()
		}
		return x.serveBatches()
	}
	return false
}

// authorizedIfKey checks the key if the server has one.
func (x *exchange) authorizedIfKey() bool {
	return x.s.cfg.Key == "" || x.authorized()
}

// readBody reads the request body, records it and notes when it was
// received. ok is false if the client went away mid-body.
func (x *exchange) readBody(record bool) (body []byte, ok bool) {
	body, err := io.ReadAll(x.r.Body)
	x.received = x.s.cfg.Now()
	if record {
		x.s.mu.Lock()
		x.s.recorded[x.idx].Body = body
		x.s.mu.Unlock()
	}
	return body, err == nil
}

// call is a valid request to a synchronous endpoint, ready to answer.
type call interface {
	// modelName is the model asked for.
	modelName() string
	// charge is what the request costs against the TPM limit.
	charge() int
	// inputTokens is what the request's input counts, as its usage will
	// report it (before caching).
	inputTokens() int
	// trigger is the text that may ask for a failure or a hang.
	trigger() string
	// flex reports whether the request asked for service_tier "flex".
	flex() bool
	// respond builds the success body and its usage.
	respond(s *Server) (body any, u usage)
}

// parser parses and validates a request body for one endpoint. It returns
// the API's error for a request the API would refuse, and may return a
// call with that error, for its model.
type parser func(body []byte) (call, *apiError)

// serveCall answers a request to a synchronous endpoint other than chat
// completions, as serve answers chat completions: validation, rate limits,
// failures, latency, hangs.
func (x *exchange) serveCall(parse parser) {
	s := x.s
	body, ok := x.readBody(true)
	if !ok {
		x.status = 0
		return
	}
	c, apiErr := parse(body)
	if c != nil {
		x.model = c.modelName()
	}
	if apiErr != nil {
		x.fail(http.StatusBadRequest, badRequest, *apiErr)
		return
	}
	if cc, ok := c.(interface{ countIn(*EndpointStats) }); ok {
		x.count(cc.countIn)
	}
	d, ok := x.admit(c.charge(), c.flex(), c.trigger())
	if !ok {
		return
	}
	resp, u := c.respond(s)
	x.finish(resp, u, c.trigger(), d)
}

// drawn is the failure drawn for a request that passed the rate limits.
type drawn struct {
	kind  Failure
	fails bool
	delay time.Duration
}

// admit takes a request's charge from the rate limits (429 with the
// headers when it does not fit), then plays flex capacity, the
// __status_500__ trigger in trigger and the failures that end a request
// without an answer. It reports whether the request is to be answered,
// and the failure drawn: FailSlow and FailBadBody are played by finish.
//
// The charge is taken as of the request's receipt, not of now: the API
// counts a request against its limits when it arrives, from an estimate
// of its tokens, before any work on it. Counting tokens exactly is the
// fake's own work, and slow at times (the first request to need an
// encoder waits for it to be built); charged when that work ends, a
// burst's first requests would land in the bucket late, and a client
// that mirrors the bucket from the moments it sent them would be refused
// for room the API would have had.
func (x *exchange) admit(charge int, flex bool, trigger string) (d drawn, ok bool) {
	s := x.s
	if s.stall != nil {
		s.stall()
	}
	v := s.lim.take(x.received, charge)
	x.limitHeaders(v)
	if !v.ok {
		x.rateLimited(v, charge)
		return d, false
	}
	if x.flexUnavailable(flex) {
		return d, false
	}
	if strings.Contains(trigger, "__status_500__") {
		x.fail(http.StatusInternalServerError, injected, serverError)
		return d, false
	}
	d.kind, d.fails, d.delay = s.draw()
	if d.fails {
		switch d.kind {
		case Fail500:
			x.fail(http.StatusInternalServerError, injected, serverError)
			return d, false
		case Fail503:
			x.fail(http.StatusServiceUnavailable, injected, overloaded)
			return d, false
		case FailDrop:
			x.outcome = injected
			x.drop()
			return d, false
		case FailSlow:
			d.delay += s.cfg.Slow
		}
	}
	return d, true
}

// finish writes an answer admit let through: after the __hang__ trigger's
// hang and the latency drawn, cut in half for FailBadBody.
func (x *exchange) finish(resp any, u usage, trigger string, d drawn) {
	s := x.s
	if strings.Contains(trigger, "__hang__") && !x.wait(s.cfg.Hang) {
		return
	}
	if !x.wait(afterChan(d.delay)) {
		return
	}
	out, err := json.MarshalIndent(resp, "", "  ")
	if err != nil {
		panic(err) // resp holds only strings, numbers and raw JSON
	}
	x.outcome, x.usage, x.slow = succeeded, u, d.fails && d.kind == FailSlow
	if d.fails && d.kind == FailBadBody {
		x.outcome = injected
		out = out[:len(out)/2]
	}
	x.write(http.StatusOK, out)
}

var overloaded = apiError{
	Message: "The engine is currently overloaded, please try again later",
	Type:    "server_error",
}

// flexUnavailable answers 429 resource_unavailable to a flex request with
// probability Config.FlexUnavailable, and reports whether it did. The
// request is not charged back: like the real API, a refused flex request
// is not billed, but it has used its place in the rate limits.
func (x *exchange) flexUnavailable(flex bool) bool {
	s := x.s
	if !flex {
		return false
	}
	s.mu.Lock()
	e := s.endpoint(x.r.URL.Path)
	e.Flex++
	refuse := s.cfg.FlexUnavailable > 0 && s.rng.Float64() < s.cfg.FlexUnavailable
	if refuse {
		e.FlexUnavailable++
	}
	s.mu.Unlock()
	if !refuse {
		return false
	}
	x.fail(http.StatusTooManyRequests, rateLimited, apiError{
		Message: "Resource unavailable: there is not enough capacity for flex processing right now. Please try again later, or use the default service tier.",
		Type:    "invalid_request_error",
		Code:    "resource_unavailable",
	})
	return true
}

// apiFault injects a failure into a Files or Batch API call with
// probability BatchConfig.APIFailRate, before the call does anything, and
// reports whether it did.
func (s *Server) apiFault(x *exchange) bool {
	if s.cfg.Batch.APIFailRate <= 0 {
		return false
	}
	s.mu.Lock()
	fails := s.rng.Float64() < s.cfg.Batch.APIFailRate
	kind := s.cfg.Failures[s.rng.IntN(len(s.cfg.Failures))]
	s.mu.Unlock()
	if !fails {
		return false
	}
	switch kind {
	case Fail503:
		x.fail(http.StatusServiceUnavailable, injected, overloaded)
	case FailDrop:
		x.outcome = injected
		x.drop()
	default:
		x.fail(http.StatusInternalServerError, injected, serverError)
	}
	return true
}

// writeJSON answers 200 with v, indented as the API does.
func (x *exchange) writeJSON(v any) {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	x.outcome = succeeded
	x.write(http.StatusOK, out)
}

// notFound answers 404 "No such <kind> object: <id>".
func (x *exchange) notFound(kind, id string) {
	x.fail(http.StatusNotFound, badRequest, apiError{
		Message: fmt.Sprintf("No such %s object: %s", kind, id),
		Type:    "invalid_request_error",
		Param:   "id",
	})
}

// invalidURL answers 404 for a method and path the API does not have.
func (x *exchange) invalidURL() {
	x.fail(http.StatusNotFound, badRequest, apiError{
		Message: fmt.Sprintf("Invalid URL (%s %s)", x.r.Method, x.r.URL.Path),
		Type:    "invalid_request_error",
	})
}

// unix is t in Unix seconds, or nil for the zero time (sent as null).
func unix(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	u := t.Unix()
	return &u
}
