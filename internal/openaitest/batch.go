package openaitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BatchAdvance says what moves a batch along its lifecycle.
type BatchAdvance int

// The ways batches advance.
const (
	// BatchOnPoll moves a batch BatchConfig.StepsPerPoll steps each time
	// it is retrieved (GET /v1/batches/{id}), before the answer is made,
	// and when AdvanceBatch or FinishBatches is called.
	BatchOnPoll BatchAdvance = iota
	// BatchManual moves batches only when AdvanceBatch or FinishBatches
	// is called.
	BatchManual
	// BatchTimed moves batches by Config.Now, as the real API does: each
	// time a batch is retrieved, listed or cancelled, it is brought up to
	// date: Validating after creation it is in progress, then answers
	// LinesPerSecond lines a second (all at once if 0), then is
	// finalizing for Finalizing, then completed. AdvanceBatch and
	// FinishBatches work too.
	BatchTimed
)

// String returns the constant's name.
func (a BatchAdvance) String() string {
	switch a {
	case BatchOnPoll:
		return "BatchOnPoll"
	case BatchManual:
		return "BatchManual"
	case BatchTimed:
		return "BatchTimed"
	}
	return "BatchAdvance(" + strconv.Itoa(int(a)) + ")"
}

// The Batch API's limits.
const (
	// DefaultMaxBatchLines is the most requests a batch input file may have.
	DefaultMaxBatchLines = 50_000
	// DefaultBatchWindow is how long a batch has before it expires.
	DefaultBatchWindow = 24 * time.Hour
)

// BatchConfig configures the Files and Batch APIs. The zero value
// advances batches on polls, one step a poll, answers every line in one
// step, fails no line and has no enqueued-token limit.
//
// A batch's steps are: validating -> in_progress (or failed, if its file
// is invalid or it would pass the enqueued-token limit); in_progress
// answers LinesPerStep lines a step and moves to finalizing with its last
// line; finalizing -> completed, when its output and error files appear.
// A cancelled batch goes to cancelling, and with its next step to
// cancelled, with the output of the lines answered so far. A step taken
// at or after the batch's expires_at (by Config.Now) expires it: the lines
// answered so far are in its output and error files, the rest in its error
// file as batch_expired.
type BatchConfig struct {
	// Advance says what moves batches (default BatchOnPoll).
	Advance BatchAdvance
	// StepsPerPoll is the steps a retrieval takes in BatchOnPoll mode
	// (default 1; negative: to the end).
	StepsPerPoll int
	// LinesPerStep is the lines a step of an in_progress batch answers
	// (0: all).
	LinesPerStep int
	// Validating, LinesPerSecond and Finalizing time batches in
	// BatchTimed mode.
	Validating     time.Duration
	LinesPerSecond float64
	Finalizing     time.Duration
	// Window is how long after its creation a batch expires (default 24h,
	// the only completion_window the API takes).
	Window time.Duration
	// LineFailRate is the probability that a line otherwise answered 200
	// gets a 500 server_error in the error file instead.
	LineFailRate float64
	// QueueTokens is the enqueued-token limit of each model: a batch whose
	// input tokens plus those of the model's batches in progress exceed it
	// fails with token_limit_exceeded. 0 means no limit.
	QueueTokens int
	// MaxLines and MaxBytes are the most lines and bytes a batch input
	// file may have (default 50,000 and 200 MB).
	MaxLines int
	MaxBytes int64
	// APIFailRate is the probability that a Files or Batch API call fails
	// before doing anything, as drawn from Config.Failures (FailSlow and
	// FailBadBody answer 500).
	APIFailRate float64
	// LoseCreates is how many batch creations, the first ones, are made
	// and then answered by closing the connection without a response, as
	// the API sometimes loses its answer after acting.
	LoseCreates int
	// LoseUploads is how many file uploads, the first ones, are stored
	// and then answered by closing the connection without a response.
	LoseUploads int
}

func (c BatchConfig) maxBytes() int64 {
	if c.MaxBytes > 0 {
		return c.MaxBytes
	}
	return DefaultMaxBatchBytes
}

func (c BatchConfig) maxLines() int {
	if c.MaxLines > 0 {
		return c.MaxLines
	}
	return DefaultMaxBatchLines
}

func (c BatchConfig) window() time.Duration {
	if c.Window > 0 {
		return c.Window
	}
	return DefaultBatchWindow
}

// BatchStats counts what the Batch API has done.
type BatchStats struct {
	// Created counts the batches created.
	Created int
	// Polls counts the retrievals of a batch (GET /v1/batches/{id}).
	Polls int
	// Lines counts the batch lines answered, and LinesByEndpoint the same
	// by the batch's endpoint (PathChat, PathEmbeddings, PathResponses).
	// Expired and cancelled lines are not answered.
	Lines           int
	LinesByEndpoint map[string]int
	// Succeeded and Failed count the lines answered 200 and the others.
	Succeeded, Failed int
	// PromptTokens and CompletionTokens add up the usage of the lines
	// answered 200.
	PromptTokens, CompletionTokens int64
	// Uploads counts the files stored by POST /v1/files, whether their
	// answer was lost or not.
	Uploads int
	// FilesDeleted counts the files deleted (DELETE /v1/files/{id}).
	FilesDeleted int
}

// batchEndpoints are the endpoints a batch may name, and the parser of
// their lines.
func (s *Server) batchParser(endpoint string) parser {
	switch endpoint {
	case PathChat:
		return s.parseChat
	case PathEmbeddings:
		return s.parseEmbeddings
	case PathResponses:
		return s.parseResponses
	}
	return nil
}

// batchError is one of a batch's errors.
type batchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

func newBatchError(code, msg, param string, line int) batchError {
	e := batchError{Code: code, Message: msg}
	if param != "" {
		e.Param = &param
	}
	if line > 0 {
		e.Line = &line
	}
	return e
}

// inputLine is one request of a batch's input file, parsed once, when
// the batch is validated.
type inputLine struct {
	customID string
	call     call      // nil if the endpoint could not read the body
	refused  *apiError // the endpoint's error for the body; nil if valid
}

// batch is one batch. Its mutex guards its state; it is never held with
// another batch's.
type batch struct {
	id, endpoint, inputFileID string
	metadata                  json.RawMessage
	seq                       uint64 // creation order, seeds the output order

	mu sync.Mutex
	// Guarded by mu.
	status                  string
	created, expires        time.Time
	inProgress, finalizing  time.Time
	completed, failedAt     time.Time
	expiredAt, cancelling   time.Time
	cancelled               time.Time
	errors                  []batchError
	total, done, failed     int
	input                   []byte // the input file's content until validated
	lines                   []inputLine
	order                   []int32 // the order lines are answered in
	next                    int     // lines of order answered
	model                   string
	tokens                  int  // input tokens, enqueued while in progress
	enqueued                bool // tokens count against the limit
	out, errs               bytes.Buffer
	outputFileID, errFileID string
	polls                   []time.Time
}

func (b *batch) terminal() bool {
	switch b.status {
	case "completed", "failed", "expired", "cancelled":
		return true
	}
	return false
}

// batchObject is the API's batch object.
type batchObject struct {
	ID               string          `json:"id"`
	Object           string          `json:"object"`
	Endpoint         string          `json:"endpoint"`
	Errors           *batchErrors    `json:"errors"`
	InputFileID      string          `json:"input_file_id"`
	CompletionWindow string          `json:"completion_window"`
	Status           string          `json:"status"`
	OutputFileID     *string         `json:"output_file_id"`
	ErrorFileID      *string         `json:"error_file_id"`
	CreatedAt        int64           `json:"created_at"`
	InProgressAt     *int64          `json:"in_progress_at"`
	ExpiresAt        *int64          `json:"expires_at"`
	FinalizingAt     *int64          `json:"finalizing_at"`
	CompletedAt      *int64          `json:"completed_at"`
	FailedAt         *int64          `json:"failed_at"`
	ExpiredAt        *int64          `json:"expired_at"`
	CancellingAt     *int64          `json:"cancelling_at"`
	CancelledAt      *int64          `json:"cancelled_at"`
	RequestCounts    requestCounts   `json:"request_counts"`
	Metadata         json.RawMessage `json:"metadata"`
}

type batchErrors struct {
	Object string       `json:"object"`
	Data   []batchError `json:"data"`
}

type requestCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// object is b as the API shows it. It requires b.mu held.
func (b *batch) object() batchObject {
	orNull := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	o := batchObject{
		ID: b.id, Object: "batch", Endpoint: b.endpoint, InputFileID: b.inputFileID,
		CompletionWindow: "24h", Status: b.status,
		OutputFileID: orNull(b.outputFileID), ErrorFileID: orNull(b.errFileID),
		CreatedAt: b.created.Unix(), InProgressAt: unix(b.inProgress), ExpiresAt: unix(b.expires),
		FinalizingAt: unix(b.finalizing), CompletedAt: unix(b.completed), FailedAt: unix(b.failedAt),
		ExpiredAt: unix(b.expiredAt), CancellingAt: unix(b.cancelling), CancelledAt: unix(b.cancelled),
		RequestCounts: requestCounts{Total: b.total, Completed: b.done, Failed: b.failed},
		Metadata:      b.metadata,
	}
	if o.Metadata == nil {
		o.Metadata = json.RawMessage("null")
	}
	if len(b.errors) > 0 {
		o.Errors = &batchErrors{Object: "list", Data: b.errors}
	}
	return o
}

// serveBatches answers the Batch API: POST /v1/batches, GET /v1/batches,
// GET /v1/batches/{id}, POST /v1/batches/{id}/cancel.
func (x *exchange) serveBatches() bool {
	r := x.r
	rest, _ := strings.CutPrefix(r.URL.Path, "/v1/batches")
	rest = strings.TrimPrefix(rest, "/")
	id, sub, _ := strings.Cut(rest, "/")
	switch {
	case id == "" && r.Method == http.MethodPost:
		x.createBatch()
	case id == "" && r.Method == http.MethodGet:
		x.listBatches()
	case id != "" && sub == "" && r.Method == http.MethodGet:
		x.retrieveBatch(id)
	case id != "" && sub == "cancel" && r.Method == http.MethodPost:
		x.cancelBatch(id)
	default:
		x.invalidURL()
	}
	return true
}

var batchParams = map[string]bool{
	"input_file_id": true, "endpoint": true, "completion_window": true,
	"metadata": true, "output_expires_after": true,
}

// createBatch answers POST /v1/batches.
func (x *exchange) createBatch() {
	s := x.s
	body, ok := x.readBody(true)
	if !ok {
		x.status = 0
		return
	}
	bad := func(e *apiError) { x.fail(http.StatusBadRequest, badRequest, *e) }
	fields, apiErr := parseObject(body, batchParams)
	if apiErr != nil {
		bad(apiErr)
		return
	}
	var req struct {
		InputFileID      string            `json:"input_file_id"`
		Endpoint         string            `json:"endpoint"`
		CompletionWindow string            `json:"completion_window"`
		Metadata         map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		bad(invalid("Invalid type for 'metadata': expected an object of strings, but got something else instead.", "metadata", "invalid_type"))
		return
	}
	for _, name := range []string{"input_file_id", "endpoint", "completion_window"} {
		if _, ok := fields[name]; !ok {
			bad(invalid(fmt.Sprintf("Missing required parameter: '%s'.", name), name, "missing_required_parameter"))
			return
		}
	}
	if s.batchParser(req.Endpoint) == nil {
		bad(invalid(fmt.Sprintf("Invalid value: '%s'. Supported values are: '/v1/chat/completions', '/v1/completions', '/v1/embeddings', and '/v1/responses'.", req.Endpoint), "endpoint", "invalid_value"))
		return
	}
	if req.CompletionWindow != "24h" {
		bad(invalid(fmt.Sprintf("Invalid value: '%s'. Supported values are: '24h'.", req.CompletionWindow), "completion_window", "invalid_value"))
		return
	}
	if len(req.Metadata) > 16 {
		bad(invalid(fmt.Sprintf("Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but got an object with %d properties instead.", len(req.Metadata)), "metadata", "object_above_max_properties"))
		return
	}
	for k, v := range req.Metadata {
		if len(k) > 64 || len(v) > 512 {
			bad(invalid(fmt.Sprintf("Invalid 'metadata': key '%.64s' or its value is too long (at most 64 and 512 characters).", k), "metadata", "invalid_value"))
			return
		}
	}
	f := s.getFile(req.InputFileID)
	if f == nil {
		bad(invalid("No such File object: "+req.InputFileID, "input_file_id", ""))
		return
	}
	if f.purpose != "batch" {
		bad(invalid(fmt.Sprintf("Invalid 'input_file_id': the file's purpose is '%s', but a batch needs a file with purpose 'batch'.", f.purpose), "input_file_id", "invalid_value"))
		return
	}
	now := s.cfg.Now()
	b := &batch{
		id: s.randomID("batch_", 32), endpoint: req.Endpoint, inputFileID: f.id,
		status: "validating", created: now, expires: now.Add(s.cfg.Batch.window()),
		input: f.data,
	}
	if raw := fields["metadata"]; req.Metadata != nil {
		b.metadata = raw
	}
	s.ext.mu.Lock()
	if s.ext.batches == nil {
		s.ext.batches = map[string]*batch{}
	}
	b.seq = uint64(len(s.ext.batchOrder))
	s.ext.batches[b.id] = b
	s.ext.batchOrder = append(s.ext.batchOrder, b.id)
	s.ext.batchStats.Created++
	lose := s.ext.createsLost < s.cfg.Batch.LoseCreates
	if lose {
		s.ext.createsLost++
	}
	hold := !lose && s.takeHoldCreate()
	s.ext.mu.Unlock()
	if lose {
		x.outcome = injected
		x.drop()
		return
	}
	if hold {
		x.outcome = injected
		x.hung()
	}
	b.mu.Lock()
	o := b.object()
	b.mu.Unlock()
	x.writeJSON(o)
}

func (s *Server) getBatch(id string) *batch {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	return s.ext.batches[id]
}

// retrieveBatch answers GET /v1/batches/{id}, and counts the poll.
func (x *exchange) retrieveBatch(id string) {
	s := x.s
	b := s.getBatch(id)
	if b == nil {
		x.notFound("Batch", id)
		return
	}
	now := s.cfg.Now()
	s.ext.mu.Lock()
	s.ext.batchStats.Polls++
	s.ext.mu.Unlock()
	b.mu.Lock()
	b.polls = append(b.polls, now)
	switch s.cfg.Batch.Advance {
	case BatchOnPoll:
		n := s.cfg.Batch.StepsPerPoll
		if n == 0 {
			n = 1
		}
		for ; n != 0 && !b.terminal(); n-- {
			s.step(b, now)
		}
	case BatchTimed:
		s.catchUp(b, now)
	}
	o := b.object()
	b.mu.Unlock()
	x.writeJSON(o)
}

// listBatches answers GET /v1/batches, newest first, with the API's after
// and limit (default 20, at most 100).
func (x *exchange) listBatches() {
	s := x.s
	if s.takeFailList() {
		x.fail(http.StatusInternalServerError, injected, serverError)
		return
	}
	q := x.r.URL.Query()
	limit := atoiOr(q.Get("limit"), 20)
	if limit < 1 || limit > 100 {
		x.fail(http.StatusBadRequest, badRequest, *invalid(fmt.Sprintf("Invalid 'limit': expected a value between 1 and 100, but got %s instead.", q.Get("limit")), "limit", "invalid_value"))
		return
	}
	after := q.Get("after")
	s.ext.mu.Lock()
	var page []*batch
	started := after == ""
	more := false
	for i := len(s.ext.batchOrder) - 1; i >= 0; i-- {
		id := s.ext.batchOrder[i]
		if !started {
			started = id == after
			continue
		}
		if len(page) == limit {
			more = true
			break
		}
		page = append(page, s.ext.batches[id])
	}
	s.ext.mu.Unlock()
	now := s.cfg.Now()
	data := make([]batchObject, 0, len(page))
	for _, b := range page {
		b.mu.Lock()
		if s.cfg.Batch.Advance == BatchTimed {
			s.catchUp(b, now)
		}
		data = append(data, b.object())
		b.mu.Unlock()
	}
	list := listObject[batchObject]{Object: "list", Data: data, HasMore: more}
	if n := len(data); n > 0 {
		list.FirstID, list.LastID = &data[0].ID, &data[n-1].ID
	}
	x.writeJSON(list)
}

// cancelBatch answers POST /v1/batches/{id}/cancel.
func (x *exchange) cancelBatch(id string) {
	s := x.s
	b := s.getBatch(id)
	if b == nil {
		x.notFound("Batch", id)
		return
	}
	now := s.cfg.Now()
	b.mu.Lock()
	if s.cfg.Batch.Advance == BatchTimed {
		s.catchUp(b, now)
	}
	switch b.status {
	case "validating", "in_progress", "finalizing":
		b.status, b.cancelling = "cancelling", now
	case "cancelling":
	default:
		status := b.status
		b.mu.Unlock()
		x.fail(http.StatusBadRequest, badRequest, *invalid(fmt.Sprintf("Cannot cancel a batch with status '%s'.", status), "", ""))
		return
	}
	o := b.object()
	b.mu.Unlock()
	x.writeJSON(o)
}

// AdvanceBatch moves the batch id one step along its lifecycle, whatever
// BatchConfig.Advance says, and returns its status then; ok is false if
// there is no such batch.
func (s *Server) AdvanceBatch(id string) (status string, ok bool) {
	b := s.getBatch(id)
	if b == nil {
		return "", false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s.step(b, s.cfg.Now())
	return b.status, true
}

// FinishBatches moves every batch to the end of its lifecycle at once.
func (s *Server) FinishBatches() {
	s.ext.mu.Lock()
	all := make([]*batch, 0, len(s.ext.batches))
	for _, id := range s.ext.batchOrder {
		all = append(all, s.ext.batches[id])
	}
	s.ext.mu.Unlock()
	for _, b := range all {
		b.mu.Lock()
		for !b.terminal() {
			s.step(b, s.cfg.Now())
		}
		b.mu.Unlock()
	}
}

// BatchPolls returns when the batch id was retrieved, by Config.Now, in
// order.
func (s *Server) BatchPolls(id string) []time.Time {
	b := s.getBatch(id)
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Time(nil), b.polls...)
}

// BatchIDs returns the ids of every batch created, oldest first.
func (s *Server) BatchIDs() []string {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	return append([]string(nil), s.ext.batchOrder...)
}

// BatchStats returns the Batch API's counts so far.
func (s *Server) BatchStats() BatchStats {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	st := s.ext.batchStats
	st.LinesByEndpoint = maps.Clone(st.LinesByEndpoint)
	return st
}

// step moves b one step at now. It requires b.mu held.
func (s *Server) step(b *batch, now time.Time) {
	if b.terminal() {
		return
	}
	if b.status != "cancelling" && !now.Before(b.expires) {
		s.expire(b, now)
		return
	}
	switch b.status {
	case "validating":
		s.start(b, now)
	case "in_progress":
		n := s.cfg.Batch.LinesPerStep
		if n <= 0 {
			n = len(b.order)
		}
		s.answerLines(b, n)
		if b.next == len(b.order) {
			b.status, b.finalizing = "finalizing", now
		}
	case "finalizing":
		b.completed = now
		s.finish(b, "completed")
	case "cancelling":
		b.cancelled = now
		s.finish(b, "cancelled")
	}
}

// catchUp brings b up to now in BatchTimed mode. It requires b.mu held.
func (s *Server) catchUp(b *batch, now time.Time) {
	c := s.cfg.Batch
	for !b.terminal() {
		if b.status != "cancelling" && !now.Before(b.expires) {
			s.expire(b, now)
			return
		}
		switch b.status {
		case "validating":
			if now.Before(b.created.Add(c.Validating)) {
				return
			}
			s.start(b, now)
		case "in_progress":
			want := len(b.order)
			if c.LinesPerSecond > 0 {
				want = min(want, int(now.Sub(b.inProgress).Seconds()*c.LinesPerSecond))
			}
			s.answerLines(b, want-b.next)
			if b.next < len(b.order) {
				return
			}
			b.status, b.finalizing = "finalizing", now
		case "finalizing":
			if now.Before(b.finalizing.Add(c.Finalizing)) {
				return
			}
			b.completed = now
			s.finish(b, "completed")
		case "cancelling":
			if now.Before(b.cancelling.Add(c.Finalizing)) {
				return
			}
			b.cancelled = now
			s.finish(b, "cancelled")
		}
	}
}

// start validates b's input file and puts b in progress, or fails it.
// It requires b.mu held.
func (s *Server) start(b *batch, now time.Time) {
	errs := s.validate(b)
	b.input = nil // read into b.lines
	if len(errs) > 0 {
		b.status, b.failedAt, b.errors = "failed", now, errs
		b.input, b.lines = nil, nil
		return
	}
	s.ext.mu.Lock()
	limit := s.queueTokens()
	over := false
	if limit > 0 {
		if s.ext.enqueued == nil {
			s.ext.enqueued = map[string]int{}
		}
		over = s.ext.enqueued[b.model]+b.tokens > limit
		if !over {
			s.ext.enqueued[b.model] += b.tokens
			b.enqueued = true
		}
	}
	s.ext.mu.Unlock()
	if over {
		b.status, b.failedAt = "failed", now
		b.errors = []batchError{newBatchError("token_limit_exceeded",
			fmt.Sprintf("Enqueued token limit reached for %s in organization %s. Limit: %s enqueued tokens. Please try again once some in_progress batches have been completed.",
				b.model, Organization, commas(limit)), "", 0)}
		b.input, b.lines = nil, nil
		return
	}
	b.status, b.inProgress = "in_progress", now
	b.total = len(b.lines)
	// The API answers lines in an order of its own; the fake's is a
	// shuffle seeded by Config.Seed and the batch's place.
	rng := rand.New(rand.NewPCG(uint64(s.cfg.Seed), b.seq))
	b.order = make([]int32, len(b.lines))
	for i := range b.order {
		j := rng.IntN(i + 1)
		b.order[i] = b.order[j]
		b.order[j] = int32(i)
	}
}

// commas writes n with thousands separators, as the API's messages do.
func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// validate checks b's input file as the API does, and notes its lines,
// model and input tokens. It requires b.mu held.
func (s *Server) validate(b *batch) []batchError {
	parse := s.batchParser(b.endpoint)
	var errs []batchError
	add := func(e batchError) {
		// A file with many bad lines gets the first of its errors.
		if len(errs) < 1000 {
			errs = append(errs, e)
		}
	}
	seen := map[string]bool{}
	data := b.input
	lineNo := 0
	for start := 0; start < len(data); {
		end := bytes.IndexByte(data[start:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += start
		}
		raw := data[start:end]
		start = end + 1
		lineNo++
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		if !json.Valid(raw) {
			add(newBatchError("invalid_json_line", "This line is not parseable as valid JSON.", "", lineNo))
			continue
		}
		var l struct {
			CustomID *string         `json:"custom_id"`
			Method   *string         `json:"method"`
			URL      *string         `json:"url"`
			Body     json.RawMessage `json:"body"`
		}
		if err := json.Unmarshal(raw, &l); err != nil {
			add(newBatchError("invalid_request", "This line is not a valid request: "+err.Error(), "", lineNo))
			continue
		}
		if string(l.Body) == "null" {
			l.Body = nil
		}
		missing := ""
		switch {
		case l.CustomID == nil:
			missing = "custom_id"
		case l.Method == nil:
			missing = "method"
		case l.URL == nil:
			missing = "url"
		case l.Body == nil:
			missing = "body"
		}
		if missing != "" {
			add(newBatchError("missing_required_parameter", fmt.Sprintf("Missing required parameter: '%s'.", missing), missing, lineNo))
			continue
		}
		if *l.Method != http.MethodPost {
			add(newBatchError("invalid_value", fmt.Sprintf("Invalid value: '%s'. Supported values are: 'POST'.", *l.Method), "method", lineNo))
			continue
		}
		if *l.URL != b.endpoint {
			add(newBatchError("invalid_url", fmt.Sprintf("The URL provided for this request does not match the batch endpoint: expected '%s', but got '%s'.", b.endpoint, *l.URL), "url", lineNo))
			continue
		}
		if seen[*l.CustomID] {
			add(newBatchError("duplicate_custom_id", "The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch.", "custom_id", lineNo))
			continue
		}
		seen[*l.CustomID] = true
		var head struct {
			Model any `json:"model"`
		}
		if json.Unmarshal(l.Body, &head) != nil {
			add(newBatchError("invalid_request", "The body of this request must be a JSON object.", "body", lineNo))
			continue
		}
		model, _ := head.Model.(string)
		if model == "" {
			add(newBatchError("missing_required_parameter", "Missing required parameter: 'body.model'.", "body.model", lineNo))
			continue
		}
		if b.model == "" {
			b.model = model
		} else if model != b.model {
			add(newBatchError("mismatched_model", fmt.Sprintf("The model '%s' of this request does not match the model '%s' of the requests before it: a batch may use only one model.", model, b.model), "body.model", lineNo))
			continue
		}
		// A body the endpoint refuses fails on its own line later, as in
		// the API; it enqueues no tokens.
		c, refused := parse(l.Body)
		if refused == nil {
			b.tokens += c.inputTokens()
		}
		b.lines = append(b.lines, inputLine{customID: *l.CustomID, call: c, refused: refused})
	}
	if len(b.lines) == 0 && len(errs) == 0 {
		add(newBatchError("empty_file", "The batch input file is empty.", "", 0))
	}
	if n, limit := len(b.lines), s.cfg.Batch.maxLines(); n > limit {
		add(newBatchError("too_many_requests", fmt.Sprintf("The batch input file has %d requests; a batch may have at most %d.", n, limit), "", 0))
	}
	return errs
}

// Batch output lines, field for field as the API writes them.
type (
	outputLine struct {
		ID       string        `json:"id"`
		CustomID string        `json:"custom_id"`
		Response *lineResponse `json:"response"`
		Error    *lineError    `json:"error"`
	}
	lineResponse struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	}
	lineError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
)

// answerLines answers up to n more of b's lines, in b's order, through the
// handlers of the synchronous endpoints. It requires b.mu held.
func (s *Server) answerLines(b *batch, n int) {
	repeat, answerAndFail := s.outputFaults()
	var lines, ok, failed int
	var prompt, completion int64
	for ; n > 0 && b.next < len(b.order); n-- {
		l := b.lines[b.order[b.next]]
		b.next++
		status, body, u := s.answerLine(l)
		out := outputLine{
			ID: s.randomID("batch_req_", 32), CustomID: l.customID,
			Response: &lineResponse{StatusCode: status, RequestID: s.randomID("", 32), Body: body},
		}
		lines++
		dst := &b.out
		if status == http.StatusOK {
			ok++
			b.done++
			prompt += int64(u.PromptTokens)
			completion += int64(u.CompletionTokens)
		} else {
			failed++
			b.failed++
			dst = &b.errs
		}
		dst.Write(mustJSON(out))
		dst.WriteByte('\n')
		if status != http.StatusOK {
			continue
		}
		if repeat {
			out.ID = s.randomID("batch_req_", 32)
			b.out.Write(mustJSON(out))
			b.out.WriteByte('\n')
		}
		if answerAndFail {
			errBody := mustJSON(map[string]apiError{"error": serverError})
			fail := outputLine{
				ID: s.randomID("batch_req_", 32), CustomID: l.customID,
				Response: &lineResponse{StatusCode: http.StatusInternalServerError, RequestID: s.randomID("", 32), Body: errBody},
			}
			b.errs.Write(mustJSON(fail))
			b.errs.WriteByte('\n')
		}
	}
	s.ext.mu.Lock()
	st := &s.ext.batchStats
	st.Lines += lines
	if st.LinesByEndpoint == nil {
		st.LinesByEndpoint = map[string]int{}
	}
	st.LinesByEndpoint[b.endpoint] += lines
	st.Succeeded += ok
	st.Failed += failed
	st.PromptTokens += prompt
	st.CompletionTokens += completion
	s.ext.mu.Unlock()
}

// answerLine answers one batch line as its synchronous endpoint would,
// without its rate limits, latency or random failures, but with
// BatchConfig.LineFailRate.
func (s *Server) answerLine(l inputLine) (status int, out []byte, u usage) {
	errBody := func(e apiError) []byte { return mustJSON(map[string]apiError{"error": e}) }
	if l.refused != nil {
		return http.StatusBadRequest, errBody(*l.refused), u
	}
	c := l.call
	fail := strings.Contains(c.trigger(), "__status_500__")
	if !fail && s.cfg.Batch.LineFailRate > 0 {
		s.mu.Lock()
		fail = s.rng.Float64() < s.cfg.Batch.LineFailRate
		s.mu.Unlock()
	}
	if fail {
		return http.StatusInternalServerError, errBody(serverError), u
	}
	resp, u := c.respond(s)
	return http.StatusOK, mustJSON(resp), u
}

// expire ends b at its deadline: the lines not answered go to its error
// file as batch_expired. It requires b.mu held.
func (s *Server) expire(b *batch, now time.Time) {
	for _, i := range b.order[b.next:] {
		out := outputLine{
			ID: s.randomID("batch_req_", 32), CustomID: b.lines[i].customID,
			Error: &lineError{Code: "batch_expired", Message: "This request could not be executed before the completion window expired."},
		}
		b.errs.Write(mustJSON(out))
		b.errs.WriteByte('\n')
		b.failed++
	}
	b.next = len(b.order)
	if b.status == "validating" {
		// Expired before validation: the API has nothing to report.
		b.input, b.lines = nil, nil
	}
	b.expiredAt = now
	s.finish(b, "expired")
}

// finish puts b in its final status, writes its output and error files
// and frees its place in the enqueued-token limit. It requires b.mu held.
func (s *Server) finish(b *batch, status string) {
	b.status = status
	// The files take the buffers' bytes; the buffers are replaced, never
	// written again.
	if b.out.Len() > 0 {
		b.outputFileID = s.addFile("batch_"+b.id+"_output.jsonl", "batch_output", b.out.Bytes()).id
	}
	if b.errs.Len() > 0 {
		b.errFileID = s.addFile("batch_"+b.id+"_error.jsonl", "batch_output", b.errs.Bytes()).id
	}
	b.out, b.errs = bytes.Buffer{}, bytes.Buffer{}
	b.input, b.lines, b.order = nil, nil, nil
	if b.enqueued {
		s.ext.mu.Lock()
		s.ext.enqueued[b.model] -= b.tokens
		s.ext.mu.Unlock()
		b.enqueued = false
	}
}

// chatCall is a valid chat-completions request.
type chatCall struct {
	req    *request
	enc    *encoder
	prompt int
	maxOut int
}

func (c *chatCall) modelName() string { return c.req.Model }
func (c *chatCall) inputTokens() int  { return c.prompt }
func (c *chatCall) trigger() string   { return c.req.lastUserText() }
func (c *chatCall) flex() bool        { return c.req.ServiceTier == "flex" }
func (c *chatCall) charge() int {
	out := c.maxOut
	if out == 0 {
		out = DefaultMaxOutput
	}
	return c.prompt + out*c.req.choices()
}

func (c *chatCall) respond(s *Server) (any, usage) {
	resp := (&exchange{s: s}).answer(c.req, c.enc, c.prompt, c.maxOut)
	return resp, resp.Usage
}

// parseChat is the chat-completions endpoint's parser, for batch lines.
func (s *Server) parseChat(body []byte) (call, *apiError) {
	req, apiErr := parseRequest(body)
	if apiErr != nil {
		if req == nil {
			return nil, apiErr
		}
		return &chatCall{req: req}, apiErr
	}
	enc, err := encoderFor(req.Model)
	if err != nil {
		panic(err)
	}
	return &chatCall{req: req, enc: enc, prompt: req.promptTokens(enc), maxOut: req.maxOutput()}, nil
}
