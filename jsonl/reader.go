// Package jsonl reads gptbatch's input lines and writes its result lines.
package jsonl

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Format is an input format.
type Format string

// The input formats.
const (
	FormatJSONL Format = "jsonl"
	FormatText  Format = "text"
	FormatCSV   Format = "csv"
)

// utf8BOM is the byte order mark, U+FEFF, in UTF-8.
const utf8BOM = "\uFEFF"

// DefaultMaxLine is the longest input line accepted when Options.MaxLine is 0.
const DefaultMaxLine = 32 << 20

// maxDepth bounds JSON nesting; encoding/json's own limit (10000) is far
// deeper than any request.
const maxDepth = 512

// The endpoints a line can go to, as Request.Endpoint and Options.Endpoint
// name them.
const (
	EndpointChat       = "chat"       // /v1/chat/completions
	EndpointResponses  = "responses"  // /v1/responses
	EndpointEmbeddings = "embeddings" // /v1/embeddings
)

// endpointURLs is the one table of the endpoints and their urls, as a
// Batch API line names them: URL and EndpointOf read it both ways.
var endpointURLs = [...]struct{ endpoint, url string }{
	{EndpointChat, "/v1/chat/completions"},
	{EndpointResponses, "/v1/responses"},
	{EndpointEmbeddings, "/v1/embeddings"},
}

// URL is the url of endpoint as a Batch API line names it
// ("/v1/chat/completions" for EndpointChat), or "" for an endpoint
// gptbatch does not send to.
func URL(endpoint string) string {
	for _, e := range endpointURLs {
		if e.endpoint == endpoint {
			return e.url
		}
	}
	return ""
}

// EndpointOf is the endpoint a Batch API line's url names, and whether it
// is one gptbatch sends to.
func EndpointOf(url string) (string, bool) {
	for _, e := range endpointURLs {
		if e.url == url {
			return e.endpoint, true
		}
	}
	return "", false
}

// Options configure a Reader. The zero value reads JSONL for chat
// completions with no system prompt and lines of up to DefaultMaxLine bytes.
type Options struct {
	Format Format
	// Endpoint is where plain lines go (a Batch API line names its own
	// url): EndpointChat (also ""), EndpointResponses or
	// EndpointEmbeddings. It decides what a line's forms mean.
	Endpoint string
	// System is the system prompt for lines that give none: a chat line
	// (any form) with no message of role system or developer, and a
	// responses line with neither instructions nor such a message, which
	// gets it as its instructions. Embeddings lines have none.
	System  string
	MaxLine int // bytes; 0 means DefaultMaxLine
}

// Request is one non-blank input line.
type Request struct {
	Line     int             // 1-based line number in the input (CSV: where the record starts)
	ID       string          // "id", else "custom_id", else the line number (a null id is none)
	Metadata json.RawMessage // the line's "metadata" exactly as given; nil if none
	// Endpoint is where the line goes: EndpointChat, EndpointResponses or
	// EndpointEmbeddings; set when Err is nil.
	Endpoint string
	// Body is the request to send to Endpoint, every field exactly as the
	// line gave it: with "messages" for chat completions, with "input" for
	// the others.
	Body map[string]json.RawMessage
	Err  *LineError // non-nil: the line is invalid and Body is nil
}

// LineError is an invalid input line.
type LineError struct {
	Line int
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Reader reads requests from an input stream. Not safe for concurrent use.
type Reader struct {
	opt  Options
	br   *bufio.Reader
	line int
	buf  []byte
	bom  bool // the start of the input was checked for a byte order mark

	csv              *csv.Reader
	header           []string
	promptCol, idCol int
}

// NewReader reads requests from r.
func NewReader(r io.Reader, opt Options) *Reader {
	if opt.MaxLine <= 0 {
		opt.MaxLine = DefaultMaxLine
	}
	if opt.Format == "" {
		opt.Format = FormatJSONL
	}
	rd := &Reader{opt: opt, br: bufio.NewReaderSize(r, 64<<10)}
	if opt.Format == FormatCSV {
		rd.csv = csv.NewReader(rd.br)
		rd.csv.FieldsPerRecord = -1
	}
	return rd
}

// Next returns the next non-blank line. It returns io.EOF at the end, and
// other errors only when reading fails or the input as a whole is unusable
// (a CSV header without a prompt column). A bad line is a Request with Err
// set, and reading goes on.
func (r *Reader) Next() (*Request, error) {
	if !r.bom {
		r.bom = true
		// Windows editors, Excel's "CSV UTF-8" and PowerShell start a
		// file with a UTF-8 byte order mark; it is not part of the
		// first line. A read error here is met again by the read below.
		if b, _ := r.br.Peek(len(utf8BOM)); string(b) == utf8BOM {
			r.br.Discard(len(utf8BOM))
		}
	}
	if r.opt.Format == FormatCSV {
		return r.nextCSV()
	}
	for {
		line, long, err := r.readLine()
		if err != nil {
			return nil, err
		}
		if long {
			return r.lineErr("longer than %s", size(r.opt.MaxLine)), nil
		}
		if line == nil {
			continue // blank
		}
		return r.parse(line), nil
	}
}

// readLine returns the next line without its newline (and CR), or nil for
// a blank line. A line longer than MaxLine is drained without being kept,
// and reported as long.
func (r *Reader) readLine() (line []byte, long bool, err error) {
	r.buf = r.buf[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		if !long {
			if len(r.buf)+len(chunk) > r.opt.MaxLine+2 {
				long = true
				r.buf = r.buf[:0]
			} else {
				if need := len(r.buf) + len(chunk); need > cap(r.buf) {
					// Double, up to the longest line kept: append grows a
					// large slice by a quarter, which copies a 32 MiB line
					// about four times over on its way in.
					r.buf = slices.Grow(r.buf, min(max(need, 2*cap(r.buf)), r.opt.MaxLine+2)-len(r.buf))
				}
				r.buf = append(r.buf, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if len(r.buf) == 0 && !long && len(chunk) == 0 {
				return nil, false, io.EOF
			}
		} else if err != nil {
			return nil, false, err
		}
		break
	}
	r.line++
	if long {
		return nil, true, nil
	}
	l := bytes.TrimSuffix(bytes.TrimSuffix(r.buf, []byte("\n")), []byte("\r"))
	if len(l) > r.opt.MaxLine {
		return nil, true, nil
	}
	if len(bytes.TrimSpace(l)) == 0 {
		return nil, false, nil
	}
	return l, false, nil
}

func (r *Reader) lineErr(msg string, args ...any) *Request {
	return &Request{Line: r.line, ID: strconv.Itoa(r.line), Err: &LineError{Line: r.line, Msg: fmt.Sprintf(msg, args...)}}
}

func (r *Reader) parse(line []byte) *Request {
	if !utf8.Valid(line) {
		return r.lineErr("not valid UTF-8")
	}
	if i := bytes.IndexByte(line, 0); i >= 0 {
		return r.lineErr("contains a NUL byte at offset %d", i)
	}
	if r.opt.Format == FormatText {
		return r.prompt(string(line), "", nil, strconv.Itoa(r.line))
	}
	if d := depth(line); d > maxDepth {
		return r.lineErr("JSON nested deeper than %d levels", maxDepth)
	}
	trimmed := bytes.TrimSpace(line)
	switch trimmed[0] {
	case '"':
		var s string
		if err := json.Unmarshal(trimmed, &s); err != nil {
			return r.lineErr("not valid JSON: %s", jsonErr(err))
		}
		return r.prompt(s, "", nil, strconv.Itoa(r.line))
	case '{':
	default:
		if !json.Valid(trimmed) {
			var v any
			return r.lineErr("not valid JSON: %s", jsonErr(json.Unmarshal(trimmed, &v)))
		}
		return r.lineErr("must be a JSON string or object, not %s", kind(trimmed))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &obj); err != nil {
		return r.lineErr("not valid JSON: %s", jsonErr(err))
	}
	return r.object(obj)
}

func (r *Reader) object(obj map[string]json.RawMessage) *Request {
	req := &Request{Line: r.line, ID: strconv.Itoa(r.line)}
	fail := func(msg string, args ...any) *Request {
		req.Body, req.Endpoint = nil, ""
		req.Err = &LineError{Line: r.line, Msg: fmt.Sprintf(msg, args...)}
		return req
	}
	if m, ok := obj["metadata"]; ok {
		req.Metadata = m
	}
	for _, k := range []string{"custom_id", "id"} {
		raw, ok := obj[k]
		if !ok || string(raw) == "null" {
			// jq's {id, prompt} writes "id": null when the source has
			// none: that is no id, not the id "".
			continue
		}
		id, err := idOf(raw)
		if err != nil {
			return fail("%s must be a string or a number", k)
		}
		req.ID = id
	}
	if body, ok := obj["body"]; ok {
		if err := r.batchLine(req, obj, body); err != nil {
			return fail("%v", err)
		}
	} else {
		req.Endpoint = r.endpoint()
		var err error
		switch req.Endpoint {
		case EndpointEmbeddings:
			req.Body, err = r.embeddingsObject(obj)
		case EndpointResponses:
			req.Body, err = r.responsesObject(obj)
		default:
			req.Body, err = r.chatObject(obj)
		}
		if err != nil {
			return fail("%v", err)
		}
	}
	if raw, ok := req.Body["model"]; ok {
		var m string
		if json.Unmarshal(raw, &m) != nil || m == "" {
			return fail(`"model" must be a non-empty string`)
		}
	}
	return req
}

// endpoint is where plain lines go.
func (r *Reader) endpoint() string {
	if r.opt.Endpoint == "" {
		return EndpointChat
	}
	return r.opt.Endpoint
}

// batchLine reads an OpenAI Batch API line into req: its url is its
// endpoint.
func (r *Reader) batchLine(req *Request, obj map[string]json.RawMessage, body json.RawMessage) error {
	for _, k := range []string{"prompt", "messages", "input"} {
		if _, ok := obj[k]; ok {
			return fmt.Errorf(`has both "body" (a Batch API line) and %q`, k)
		}
	}
	if m, ok := obj["method"]; ok && string(m) != `"POST"` {
		return fmt.Errorf("method %s is not supported: gptbatch sends POST requests", m)
	}
	req.Endpoint = EndpointChat
	if raw, ok := obj["url"]; ok {
		var u string
		json.Unmarshal(raw, &u) //nolint:errcheck // not a string: "", no endpoint's url
		e, ok := EndpointOf(u)
		if !ok {
			return fmt.Errorf("url %s is not supported: gptbatch sends /v1/chat/completions, /v1/responses and /v1/embeddings", raw)
		}
		req.Endpoint = e
	}
	if err := json.Unmarshal(body, &req.Body); err != nil || req.Body == nil {
		return errors.New(`"body" must be a JSON object`)
	}
	switch req.Endpoint {
	case EndpointChat:
		if _, ok := req.Body["messages"]; !ok {
			return errors.New(`"body" has no "messages"`)
		}
		if err := checkMessages(req.Body["messages"]); err != nil {
			return err
		}
		req.Body["messages"] = withSystem(req.Body["messages"], r.opt.System)
	case EndpointResponses:
		if _, ok := req.Body["input"]; !ok {
			return errors.New(`"body" has no "input"`)
		}
		r.instructions(req.Body)
	case EndpointEmbeddings:
		if _, ok := req.Body["input"]; !ok {
			return errors.New(`"body" has no "input"`)
		}
	}
	return nil
}

// linePlain are the fields of a plain line that are not sent.
var linePlain = []string{"id", "custom_id", "metadata"}

// copyBody is obj without the fields that name the line and without drop.
func copyBody(obj map[string]json.RawMessage, drop ...string) map[string]json.RawMessage {
	body := make(map[string]json.RawMessage, len(obj))
	for k, v := range obj {
		body[k] = v
	}
	for _, k := range append(drop, linePlain...) {
		delete(body, k)
	}
	return body
}

// onlyOne checks that obj has exactly one of forms.
func onlyOne(obj map[string]json.RawMessage, forms ...string) (string, error) {
	var found []string
	for _, f := range forms {
		if _, ok := obj[f]; ok {
			found = append(found, f)
		}
	}
	if len(found) != 1 {
		q := make([]string, len(forms))
		for i, f := range forms {
			q[i] = strconv.Quote(f)
		}
		return "", fmt.Errorf("needs exactly one of %s or \"body\" (a Batch API line)", strings.Join(q, ", "))
	}
	return found[0], nil
}

// stringField reads obj[k] as a string, if it is there.
func stringField(obj map[string]json.RawMessage, k string) (s string, ok bool, err error) {
	raw, ok := obj[k]
	if !ok {
		return "", false, nil
	}
	if json.Unmarshal(raw, &s) != nil {
		return "", true, fmt.Errorf("%q must be a string", k)
	}
	return s, true, nil
}

// chatObject is the chat-completions request of a "prompt" or "messages"
// line.
func (r *Reader) chatObject(obj map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	form, err := onlyOne(obj, "prompt", "messages")
	if err != nil {
		return nil, err
	}
	if form == "prompt" {
		p, _, err := stringField(obj, "prompt")
		if err != nil {
			return nil, err
		}
		sys, hasSys, err := stringField(obj, "system")
		if err != nil {
			return nil, err
		}
		if !hasSys {
			sys = r.opt.System
		}
		body := copyBody(obj, "prompt", "system")
		body["messages"] = messages(sys, p)
		return body, nil
	}
	body := copyBody(obj, "system")
	if err := checkMessages(body["messages"]); err != nil {
		return nil, err
	}
	body["messages"] = withSystem(body["messages"], r.opt.System)
	return body, nil
}

// embeddingsObject is the embeddings request of an "input" line; "prompt"
// is taken as the input too, so that the lines a chat batch was made of
// can be embedded as they are.
func (r *Reader) embeddingsObject(obj map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	if _, ok := obj["messages"]; ok {
		return nil, errors.New(`an embeddings line gives "input" (or "prompt"), not "messages"`)
	}
	form, err := onlyOne(obj, "input", "prompt")
	if err != nil {
		return nil, err
	}
	if form == "prompt" {
		p, _, err := stringField(obj, "prompt")
		if err != nil {
			return nil, err
		}
		body := copyBody(obj, "prompt")
		body["input"] = mustString(p)
		return body, nil
	}
	return copyBody(obj), nil
}

// responsesObject is the Responses API request of an "input", "prompt"
// or "messages" line.
func (r *Reader) responsesObject(obj map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	form, err := onlyOne(obj, "input", "prompt", "messages")
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	switch form {
	case "input":
		body = copyBody(obj)
	case "prompt":
		p, _, err := stringField(obj, "prompt")
		if err != nil {
			return nil, err
		}
		sys, hasSys, err := stringField(obj, "system")
		if err != nil {
			return nil, err
		}
		body = copyBody(obj, "prompt", "system")
		body["input"] = mustString(p)
		if hasSys && sys != "" {
			body["instructions"] = mustString(sys)
		}
	default:
		if err := checkMessages(obj["messages"]); err != nil {
			return nil, err
		}
		items, err := inputItems(obj["messages"])
		if err != nil {
			return nil, err
		}
		body = copyBody(obj, "messages", "system")
		body["input"] = items
	}
	r.instructions(body)
	return body, nil
}

// instructions gives a responses request --system as its instructions
// when it has none and no input message of role system or developer.
func (r *Reader) instructions(body map[string]json.RawMessage) {
	if r.opt.System == "" {
		return
	}
	if raw, ok := body["instructions"]; ok && string(raw) != "null" && string(raw) != `""` {
		return
	}
	if hasSystem(body["input"]) {
		return
	}
	body["instructions"] = mustString(r.opt.System)
}

// prompt is the request for a bare prompt: a JSON string, a text line or
// a CSV record.
func (r *Reader) prompt(p, sys string, meta json.RawMessage, id string) *Request {
	req := &Request{Line: r.line, ID: id, Metadata: meta, Endpoint: r.endpoint()}
	sys = cmp.Or(sys, r.opt.System)
	switch req.Endpoint {
	case EndpointEmbeddings:
		req.Body = map[string]json.RawMessage{"input": mustString(p)}
	case EndpointResponses:
		req.Body = map[string]json.RawMessage{"input": mustString(p)}
		if sys != "" {
			req.Body["instructions"] = mustString(sys)
		}
	default:
		req.Body = map[string]json.RawMessage{"messages": messages(sys, p)}
	}
	return req
}

func mustString(s string) json.RawMessage {
	b, _ := json.Marshal(s) // strings always encode
	return b
}

func messages(sys, prompt string) json.RawMessage {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	ms := make([]msg, 0, 2)
	if sys != "" {
		ms = append(ms, msg{"system", sys})
	}
	ms = append(ms, msg{"user", prompt})
	b, _ := json.Marshal(ms) // strings always encode
	return b
}

// hasSystem reports whether a list of messages (or of Responses API input
// items) has one of role system or developer.
func hasSystem(raw json.RawMessage) bool {
	var ms []struct {
		Role string `json:"role"`
	}
	if json.Unmarshal(raw, &ms) != nil {
		return false
	}
	for _, m := range ms {
		if m.Role == "system" || m.Role == "developer" {
			return true
		}
	}
	return false
}

// withSystem is messages with a system message holding sys first, unless
// sys is empty or a message has role system or developer already.
func withSystem(msgs json.RawMessage, sys string) json.RawMessage {
	if sys == "" || hasSystem(msgs) {
		return msgs
	}
	var ms []json.RawMessage
	if json.Unmarshal(msgs, &ms) != nil {
		return msgs // checkMessages says what is wrong
	}
	first, _ := json.Marshal(struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}{"system", sys})
	b, _ := json.Marshal(append([]json.RawMessage{first}, ms...))
	return b
}

func checkMessages(raw json.RawMessage) error {
	var ms []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ms); err != nil {
		return errors.New(`"messages" must be an array of message objects`)
	}
	if len(ms) == 0 {
		return errors.New(`"messages" is empty`)
	}
	for i, m := range ms {
		var role string
		if json.Unmarshal(m["role"], &role) != nil || role == "" {
			return fmt.Errorf(`messages[%d] has no "role" string`, i)
		}
	}
	return nil
}

func idOf(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		return n.String(), nil
	}
	return "", errors.New("bad id")
}

// depth is the deepest nesting of arrays and objects in a JSON text, found
// in one pass that skips strings.
func depth(b []byte) int {
	d, deepest, inStr, esc := 0, 0, false, false
	for _, c := range b {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '[' || c == '{':
			d++
			deepest = max(deepest, d)
			if deepest > maxDepth {
				return deepest
			}
		case c == ']' || c == '}':
			d--
		}
	}
	return deepest
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	}
	if err == nil {
		return "invalid"
	}
	return err.Error()
}

func kind(b []byte) string {
	switch b[0] {
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func size(n int) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// ErrNoPromptColumn is the error of a CSV batch whose header names no
// "prompt" column: the input as a whole is unusable.
var ErrNoPromptColumn = errors.New(`csv header has no "prompt" column`)

// nextCSV reads one CSV record: the header first, then prompts.
func (r *Reader) nextCSV() (*Request, error) {
	if r.header == nil {
		h, err := r.csv.Read()
		if err != nil {
			if err == io.EOF {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("csv header: %w", err)
		}
		r.header = append([]string(nil), h...)
		r.promptCol, r.idCol = -1, -1
		for i, name := range r.header {
			switch name {
			case "prompt":
				r.promptCol = i
			case "id":
				r.idCol = i
			}
		}
		if r.promptCol < 0 {
			return nil, fmt.Errorf("%w; the columns are %q", ErrNoPromptColumn, r.header)
		}
	}
	for {
		rec, err := r.csv.Read()
		line, _ := r.csv.FieldPos(0)
		r.line = line
		if err == io.EOF {
			return nil, io.EOF
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			r.line = pe.StartLine
			return r.lineErr("bad CSV: %v", pe.Err), nil
		}
		if err != nil {
			return nil, err
		}
		if len(rec) != len(r.header) {
			return r.lineErr("has %d fields, the header has %d", len(rec), len(r.header)), nil
		}
		if len(rec) == 1 && rec[0] == "" {
			continue
		}
		id := strconv.Itoa(line)
		if r.idCol >= 0 && rec[r.idCol] != "" {
			id = rec[r.idCol]
		}
		meta := map[string]string{}
		for i, v := range rec {
			if i != r.promptCol && i != r.idCol {
				meta[r.header[i]] = v
			}
		}
		var mraw json.RawMessage
		if len(meta) > 0 {
			mraw, _ = json.Marshal(meta)
		}
		p := rec[r.promptCol]
		if !utf8.ValidString(p) {
			return &Request{Line: line, ID: id, Metadata: mraw, Err: &LineError{Line: line, Msg: "not valid UTF-8"}}, nil
		}
		return r.prompt(p, "", mraw, id), nil
	}
}
