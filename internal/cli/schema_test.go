package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// tenFields is a 10-field extraction schema (strings, numbers, a boolean,
// an enum, a nullable field and a list): the repository's fixture.
// Read by where this file is, not the working directory: the test binary
// also runs as gptbatch in other directories, and reads it there too.
var tenFields = func() string {
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "../../testdata/schema/ten-fields.json"))
	if err != nil {
		panic(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}()

// schemaResult is a result line with parsed.
type schemaResult struct {
	ID           string          `json:"id"`
	Content      *string         `json:"content"`
	Parsed       json.RawMessage `json:"parsed"`
	Refusal      *string         `json:"refusal"`
	FinishReason string          `json:"finish_reason"`
	Usage        *usage          `json:"usage"`
	CostUSD      json.RawMessage `json:"cost_usd"`
	Attempts     int             `json:"attempts"`
	Error        *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// validator compiles doc with santhosh-tekuri/jsonschema directly, formats
// asserted: the check owes nothing to gptbatch's own wrapper of it.
func validator(t *testing.T, doc string) func(json.RawMessage) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("mem://s.json", v); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("mem://s.json")
	if err != nil {
		t.Fatal(err)
	}
	return func(raw json.RawMessage) error {
		if raw == nil {
			return fmt.Errorf("no parsed value")
		}
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(string(raw)))
		if err != nil {
			return err
		}
		return s.Validate(v)
	}
}

// reviews is n lines asking to extract a review.
func reviews(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"id":"r%d","prompt":"Extract the reviewer of review %d: Ada, 36, GB, loved it"}`+"\n", i, i)
	}
	return b.String()
}

// TestSchemaInvalidAnswersAskedAgain: 1,000 lines held to a schema, a
// tenth of whose first answers are invalid in each of the four ways, all
// end with a parsed value that fits the schema; every invalid answer was
// asked again once, and each try is in attempts, in the ledger, in the
// summary and in the line's cost_usd, which is the sum of its tries to the
// picodollar, as the fake's own usage prices them.
func TestSchemaInvalidAnswersAskedAgain(t *testing.T) {
	t.Parallel()
	s := openaitest.New(openaitest.Config{Seed: 11, Structured: openaitest.StructuredConfig{InvalidRate: 0.1}})
	defer s.Close()
	g := newGB(t, s.URL()).loud()
	file := writeFile(t, g.dir, "review.json", tenFields)
	const n = 1000 // the size --schema promises for: about 10 % of first answers invalid, of each kind
	out, stderr, code := g.run(context.Background(), reviews(n), "--schema", file, "--progress", "never", "-p", "32", "--rpm", "0", "--tpm", "0", "--tpd", "0", "--batch-tokens", "0")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	fits := validator(t, tenFields)
	rs := parseLines[schemaResult](t, out)
	if len(rs) != n {
		t.Fatalf("%d results, want %d", len(rs), n)
	}
	invalid := invalidFirstAnswers(t, s, n)
	price, _ := budget.PriceOf("gpt-4o-mini")
	byLine := map[string][]budget.LedgerEntry{}
	for _, e := range ledger(t, g.dir) {
		byLine[e.ID] = append(byLine[e.ID], e)
	}
	var sum, reaskCost budget.Cost
	asked := 0
	for _, r := range rs {
		if r.Error != nil || fits(r.Parsed) != nil {
			t.Fatalf("%s: error %+v, parsed %s: does not fit: %v", r.ID, r.Error, r.Parsed, fits(r.Parsed))
		}
		es := byLine[r.ID]
		if r.Attempts != len(es) || r.Attempts < 1 || r.Attempts > 2 {
			t.Errorf("%s: attempts %d, %d ledger lines; want 1, or 2 when asked again", r.ID, r.Attempts, len(es))
		}
		u, c, reask := tries(es)
		reaskCost += reask
		if got := cost(t, r.CostUSD); got != c || got != price.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens) {
			t.Errorf("%s: cost_usd %s, want the sum of its tries %s", r.ID, got, c)
		}
		if r.Usage.PromptTokens != u.PromptTokens || r.Usage.CompletionTokens != u.CompletionTokens {
			t.Errorf("%s: usage %+v, want its tries' %+v", r.ID, *r.Usage, u)
		}
		if r.Attempts == 2 {
			asked++
		}
		sum += c
	}
	if asked != invalid {
		t.Errorf("%d lines asked again, want the %d invalid first answers", asked, invalid)
	}
	fs := s.Stats()
	if fs.Requests != n+invalid {
		t.Errorf("the fake saw %d requests, want %d", fs.Requests, n+invalid)
	}
	if want := price.Cost(fs.PromptTokens, fs.CachedTokens, fs.CompletionTokens); sum != want {
		t.Errorf("the lines' cost_usd add up to %s, the fake's usage to %s", sum, want)
	}
	want := fmt.Sprintf("%d answers checked against the schema, %d asked again (%d re-asks, $%s)", n, invalid, invalid, reaskCost)
	if !strings.Contains(stderr, want) {
		t.Errorf("summary %q does not say %q", stderr, want)
	}
}

// TestSchemaAlwaysInvalid: a line whose every answer is invalid ends as
// invalid_output after the re-asks, its last content kept and every try
// paid for; a refused one keeps its refusal; the run exits 1.
func TestSchemaAlwaysInvalid(t *testing.T) {
	t.Parallel()
	s := openaitest.New(openaitest.Config{})
	defer s.Close()
	g := newGB(t, s.URL())
	in := `{"id":"bad","prompt":"review __invalid__"}` + "\n" + `{"id":"no","prompt":"review __refusal__"}` + "\n" + `{"id":"ok","prompt":"review fine"}` + "\n"
	out, stderr, code := g.run(context.Background(), in, "--schema", tenFields, "--schema-retries", "2")
	if code != 1 {
		t.Fatalf("exit status %d, want 1: %s", code, stderr)
	}
	rs := parseLines[schemaResult](t, out)
	byLine := map[string][]budget.LedgerEntry{}
	for _, e := range ledger(t, g.dir) {
		byLine[e.ID] = append(byLine[e.ID], e)
	}
	for _, r := range rs[:2] {
		if r.Error == nil || r.Error.Type != "invalid_output" || !strings.Contains(r.Error.Message, "in 3 tries") {
			t.Errorf("%s: error %+v, want invalid_output after 3 tries", r.ID, r.Error)
		}
		if r.Parsed != nil || r.Attempts != 3 || len(byLine[r.ID]) != 3 {
			t.Errorf("%s: parsed %s, attempts %d, %d ledger lines; want none, 3, 3", r.ID, r.Parsed, r.Attempts, len(byLine[r.ID]))
		}
		var c budget.Cost
		for _, e := range byLine[r.ID] {
			c += *e.CostUSD
		}
		if got := cost(t, r.CostUSD); got != c || c == 0 {
			t.Errorf("%s: cost_usd %s, want its three tries' %s", r.ID, got, c)
		}
	}
	if c := rs[0].Content; c == nil || !strings.Contains(*c, `"name":12345`) || !strings.Contains(rs[0].Error.Message, "at /name: got number, want string") {
		t.Errorf("bad: content %v, message %q: want the invalid answer kept and the validator's message", c, rs[0].Error.Message)
	}
	if rs[1].Refusal == nil || *rs[1].Refusal != openaitest.RefusalMessage || !strings.Contains(rs[1].Error.Message, "refused") {
		t.Errorf("no: refusal %v, message %q: want the refusal kept", rs[1].Refusal, rs[1].Error.Message)
	}
	if rs[2].Error != nil || rs[2].Parsed == nil || rs[2].Attempts != 1 {
		t.Errorf("ok: %+v, want parsed in one try", rs[2])
	}
}

// TestSchemaTruncatedNeverParsed: an answer cut off at the output cap is
// asked again, and is never parsed, even when the cut falls where the JSON
// would parse.
func TestSchemaTruncatedNeverParsed(t *testing.T) {
	t.Parallel()
	s := openaitest.New(openaitest.Config{})
	defer s.Close()
	g := newGB(t, s.URL())
	out, stderr, code := g.run(context.Background(), reviews(3), "--schema", tenFields, "--max-tokens", "20", "--schema-retries", "1")
	if code != 1 {
		t.Fatalf("exit status %d, want 1: %s", code, stderr)
	}
	for _, r := range parseLines[schemaResult](t, out) {
		if r.Parsed != nil || r.FinishReason != "length" || r.Error == nil || r.Error.Type != "invalid_output" || r.Attempts != 2 {
			t.Errorf("%s: parsed %s, finish %s, error %+v, attempts %d: want a truncated answer, asked again once, never parsed", r.ID, r.Parsed, r.FinishReason, r.Error, r.Attempts)
		}
	}
	// The re-ask asks for a shorter answer; it does not send the cut text.
	reqs := s.Requests()
	if len(reqs) != 6 || !strings.Contains(string(reqs[5].Body), "cut off at the output token limit") {
		t.Errorf("%d requests, the last %s: want 6, the re-asks saying the answer was cut off", len(reqs), reqs[len(reqs)-1].Body)
	}
}

// TestSchemaForms: a schema file, inline JSON and the concise form all
// go out as the request's json_schema format, strict, and every answer is
// parsed and fits; the Responses API gets it as text.format.
func TestSchemaForms(t *testing.T) {
	t.Parallel()
	concise := "name, age int: in years, score float, member bool, bio: one sentence"
	conciseDoc := `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","description":"in years"},"score":{"type":"number"},"member":{"type":"boolean"},"bio":{"type":"string","description":"one sentence"}},"required":["name","age","score","member","bio"],"additionalProperties":false}`
	tests := []struct {
		name, endpoint, value, doc, schemaName string
	}{
		{"file", "chat", "FILE", tenFields, "person"},
		{"inline JSON", "chat", tenFields, tenFields, "output"},
		{"concise", "chat", concise, conciseDoc, "output"},
		{"responses", "responses", concise, conciseDoc, "output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openaitest.New(openaitest.Config{})
			defer s.Close()
			g := newGB(t, s.URL())
			value := tt.value
			if value == "FILE" {
				value = writeFile(t, g.dir, "person.json", tt.doc)
			}
			out, stderr, code := g.run(context.Background(), reviews(5), "--schema", value, "--endpoint", tt.endpoint)
			if code != 0 {
				t.Fatalf("exit status %d: %s", code, stderr)
			}
			fits := validator(t, tt.doc)
			for _, r := range parseLines[schemaResult](t, out) {
				if err := fits(r.Parsed); err != nil {
					t.Errorf("%s: parsed %s: %v", r.ID, r.Parsed, err)
				}
			}
			var body struct {
				ResponseFormat *struct {
					JSONSchema struct {
						Name   string          `json:"name"`
						Schema json.RawMessage `json:"schema"`
						Strict bool            `json:"strict"`
					} `json:"json_schema"`
				} `json:"response_format"`
				Text *struct {
					Format struct {
						Type   string          `json:"type"`
						Name   string          `json:"name"`
						Schema json.RawMessage `json:"schema"`
						Strict bool            `json:"strict"`
					} `json:"format"`
				} `json:"text"`
			}
			if err := json.Unmarshal(s.Requests()[0].Body, &body); err != nil {
				t.Fatal(err)
			}
			name, sent, strict := "", json.RawMessage(nil), false
			switch {
			case tt.endpoint == "chat" && body.ResponseFormat != nil:
				name, sent, strict = body.ResponseFormat.JSONSchema.Name, body.ResponseFormat.JSONSchema.Schema, body.ResponseFormat.JSONSchema.Strict
			case tt.endpoint == "responses" && body.Text != nil && body.Text.Format.Type == "json_schema":
				name, sent, strict = body.Text.Format.Name, body.Text.Format.Schema, body.Text.Format.Strict
			default:
				t.Fatalf("request %s carries no schema", s.Requests()[0].Body)
			}
			if name != tt.schemaName || !strict || !sameJSON(t, sent, tt.doc) {
				t.Errorf("sent name %q, strict %v, schema %s; want %q, strict, %s", name, strict, sent, tt.schemaName, tt.doc)
			}
		})
	}
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(t *testing.T, a json.RawMessage, b string) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// TestSchemaBadUsage: a schema that is not valid JSON Schema, a concise
// form that does not parse, a missing file, and --schema where no answer
// can be checked stop gptbatch with exit 2, naming the problem, and
// nothing is sent.
func TestSchemaBadUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"not JSON Schema", []string{"--schema", `{"type":"objec"}`}, "--schema: inline schema: not a valid JSON Schema: at /type"},
		{"not JSON", []string{"--schema", `{"type":`}, "--schema: inline schema: not JSON"},
		{"concise", []string{"--schema", "name, age integer"}, `unknown type "integer"`},
		{"missing file", []string{"--schema", "schemas/person.json"}, "schema file schemas/person.json: no such file"},
		{"embeddings", []string{"--schema", "name", "--endpoint", "embeddings"}, "--schema: the embeddings endpoint"},
		{"retries", []string{"--schema", "name", "--schema-retries=101"}, "--schema-retries must be from 0 to 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openaitest.New(openaitest.Config{})
			defer s.Close()
			g := newGB(t, s.URL())
			out, stderr, code := g.run(context.Background(), reviews(2), tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) || out != "" {
				t.Errorf("exit status %d, stderr %q, stdout %q; want 2 and %q", code, stderr, out, tt.want)
			}
			if n := s.Stats().Requests; n != 0 {
				t.Errorf("the fake saw %d requests, want 0", n)
			}
		})
	}
}

// TestSchemaNonStrict: a schema strict mode cannot take is sent with
// strict false, said once on stderr, and still held to locally.
func TestSchemaNonStrict(t *testing.T) {
	t.Parallel()
	s := openaitest.New(openaitest.Config{})
	defer s.Close()
	g := newGB(t, s.URL()).loud()
	doc := `{"type":"object","properties":{"bio":{"type":"string","minLength":200}},"required":["bio"],"additionalProperties":false}`
	out, stderr, code := g.run(context.Background(), reviews(4), "--schema", doc, "--progress", "never")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	if n := strings.Count(stderr, "--schema is sent non-strict: #/properties/bio: \"minLength\""); n != 1 {
		t.Errorf("stderr says non-strict %d times, want once:\n%s", n, stderr)
	}
	if !strings.Contains(string(s.Requests()[0].Body), `"strict":false`) {
		t.Errorf("request %s, want strict false", s.Requests()[0].Body)
	}
	fits := validator(t, doc)
	for _, r := range parseLines[schemaResult](t, out) {
		if err := fits(r.Parsed); err != nil {
			t.Errorf("%s: %v", r.ID, err)
		}
	}
}

// TestSchemaLineOwnFormat: a line's own json_schema format is sent as it
// is and its answer held to it, not to --schema; a line that asked for
// json_object is not checked; with n > 1 parsed holds every choice's
// value.
func TestSchemaLineOwnFormat(t *testing.T) {
	t.Parallel()
	s := openaitest.New(openaitest.Config{})
	defer s.Close()
	g := newGB(t, s.URL())
	own := `{"type":"json_schema","json_schema":{"name":"colour","strict":true,"schema":{"type":"object","properties":{"colour":{"type":"string","enum":["red","blue"]}},"required":["colour"],"additionalProperties":false}}}`
	in := `{"id":"own","prompt":"a colour","response_format":` + own + "}\n" +
		`{"id":"object","prompt":"anything","response_format":{"type":"json_object"}}` + "\n" +
		`{"id":"three","prompt":"three people","n":3}` + "\n"
	out, stderr, code := g.run(context.Background(), in, "--schema", "name, age int")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	rs := parseLines[schemaResult](t, out)
	if p := string(rs[0].Parsed); p != `{"colour":"red"}` && p != `{"colour":"blue"}` {
		t.Errorf("own: parsed %s, want its own schema's colour", p)
	}
	for _, req := range s.Requests() {
		if b := string(req.Body); strings.Contains(b, "a colour") && (!strings.Contains(b, `"name":"colour"`) || strings.Contains(b, `"name":"output"`)) {
			t.Errorf("own: sent %s, want its own format alone", b)
		}
	}
	if rs[1].Parsed != nil || rs[1].Error != nil {
		t.Errorf("object: parsed %s, error %+v: want it unchecked", rs[1].Parsed, rs[1].Error)
	}
	var three []map[string]any
	if err := json.Unmarshal(rs[2].Parsed, &three); err != nil || len(three) != 3 || three[2]["age"] == nil {
		t.Errorf("three: parsed %s (%v), want an array of three values", rs[2].Parsed, err)
	}
}

// TestSchemaEstimates: the schema's own tokens are in every estimate: a
// dry run's prompt_tokens and its schema_tokens share and summary, and
// --batch-tokens and the reservation refuse what only the schema makes
// too large.
func TestSchemaEstimates(t *testing.T) {
	t.Parallel()
	s := openaitest.New(openaitest.Config{})
	defer s.Close()
	g := newGB(t, s.URL()).loud()
	dry := func(args ...string) (map[string]int64, map[string]int64, string) {
		t.Helper()
		out, stderr, code := g.run(context.Background(), reviews(3), append([]string{"--dry-run"}, args...)...)
		if code != 0 {
			t.Fatalf("dry run: exit status %d: %s", code, stderr)
		}
		shares := map[string]int64{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var e struct {
				ID           string `json:"id"`
				SchemaTokens int64  `json:"schema_tokens"`
			}
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatal(err)
			}
			shares[e.ID] = e.SchemaTokens
		}
		return estimates(t, out), shares, stderr
	}
	plain, none, _ := dry()
	held, shares, summary := dry("--schema", tenFields)
	var share int64
	for id, p := range held {
		share = shares[id]
		if none[id] != 0 || share < 50 || p != plain[id]+share {
			t.Errorf("%s: prompt_tokens %d with the schema (schema_tokens %d), %d without", id, p, share, plain[id])
		}
	}
	if want := fmt.Sprintf("(%d of them the schema's)", 3*share); !strings.Contains(summary, want) {
		t.Errorf("dry-run summary %q does not say %q", summary, want)
	}
	// The fake bills the schema so too: the first answer's prompt tokens
	// are the estimate.
	out, stderr, code := g.run(context.Background(), reviews(1), "--schema", tenFields, "--progress", "never")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	if r := parseLines[schemaResult](t, out)[0]; r.Usage.PromptTokens != held["r0"] {
		t.Errorf("prompt_tokens %d billed, %d estimated", r.Usage.PromptTokens, held["r0"])
	}

	var total int64
	for _, p := range plain {
		total += p
	}
	limit := strconv.FormatInt(total+share, 10) // above the batch without the schema, below it with
	if _, stderr, code := g.run(context.Background(), reviews(3), "--batch-tokens", limit, "--progress", "never"); code != 0 {
		t.Errorf("without the schema, --batch-tokens %s: exit status %d: %s", limit, code, stderr)
	}
	before := s.Stats().Requests
	if _, stderr, code := g.run(context.Background(), reviews(3), "--batch-tokens", limit, "--schema", tenFields); code != 3 || !strings.Contains(stderr, "--batch-tokens") {
		t.Errorf("with the schema, --batch-tokens %s: exit status %d, want 3: %s", limit, code, stderr)
	}
	// --tpm below one line's estimate with the schema, above it without:
	// the line is never sent.
	tpm := strconv.FormatInt(plain["r0"]+256+share/2, 10)
	out, _, code = g.run(context.Background(), reviews(1), "--tpm", tpm, "--schema", tenFields, "--batch-tokens", "0")
	if r := parseLines[schemaResult](t, out)[0]; code != 1 || r.Error == nil || r.Error.Type != "budget" {
		t.Errorf("--tpm %s with the schema: exit status %d, %+v: want a budget error", tpm, code, r.Error)
	}
	if n := s.Stats().Requests - before; n != 0 {
		t.Errorf("%d requests sent past the limits, want 0", n)
	}
}

// schemaBatchResult is a result line with parsed and batch_id.
type schemaBatchResult struct {
	schemaResult
	BatchID string `json:"batch_id"`
}

// TestSchemaViaBatchInvalidAnswersAskedAgain: through the Batch API, 1,000
// lines held to a schema, a tenth of whose first answers are invalid in
// each of the four ways, all end with a parsed value that fits: the
// invalid lines went again in follow-up batches, at batch prices, and
// each try is in attempts, in the ledger, in the summary and in the
// line's cost_usd, the sum of its tries to the picodollar. No request
// went to the synchronous API.
func TestSchemaViaBatchInvalidAnswersAskedAgain(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	s := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 11, Structured: openaitest.StructuredConfig{InvalidRate: 0.1}})
	defer s.Close()
	g := newGB(t, s.URL()).loud()
	g.seams.Clock = clk
	file := writeFile(t, g.dir, "review.json", tenFields)
	const n = 1000 // the size --schema promises for: about 10 % of first answers invalid, of each kind
	out, stderr, code := g.run(context.Background(), reviews(n), "--via", "batch", "--schema", file, "--progress", "never", "--batch-lines", "400")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	fits := validator(t, tenFields)
	rs := parseLines[schemaBatchResult](t, out)
	if len(rs) != n {
		t.Fatalf("%d results, want %d", len(rs), n)
	}
	invalid := invalidFirstAnswers(t, s, n)
	byLine := map[string][]budget.LedgerEntry{}
	for _, e := range ledger(t, g.dir) {
		byLine[e.ID] = append(byLine[e.ID], e)
	}
	var reaskCost budget.Cost
	asked := 0
	batches := map[string]bool{}
	for i, r := range rs {
		if want := fmt.Sprint("r", i); r.ID != want {
			t.Fatalf("result %d is %s, want %s: input order", i, r.ID, want)
		}
		if r.Error != nil || fits(r.Parsed) != nil {
			t.Fatalf("%s: error %+v, parsed %s: does not fit: %v", r.ID, r.Error, r.Parsed, fits(r.Parsed))
		}
		batches[r.BatchID] = true
		es := byLine[r.ID]
		if r.Attempts != len(es) || r.Attempts < 1 || r.Attempts > 2 {
			t.Errorf("%s: attempts %d, %d ledger lines; want 1, or 2 when asked again", r.ID, r.Attempts, len(es))
		}
		for _, e := range es {
			if e.Via != "batch" || e.BatchID == "" {
				t.Errorf("%s: ledger entry via %q, batch %q: want every try through a batch", r.ID, e.Via, e.BatchID)
			}
		}
		u, c, reask := tries(es)
		reaskCost += reask
		if got := cost(t, r.CostUSD); got != c || c == 0 {
			t.Errorf("%s: cost_usd %s, want the sum of its tries %s", r.ID, got, c)
		}
		if r.Usage.PromptTokens != u.PromptTokens || r.Usage.CompletionTokens != u.CompletionTokens {
			t.Errorf("%s: usage %+v, want its tries' %+v", r.ID, *r.Usage, u)
		}
		if r.Attempts == 2 {
			asked++
		}
	}
	if asked != invalid {
		t.Errorf("%d lines asked again, want the %d invalid first answers", asked, invalid)
	}
	bs := s.BatchStats()
	if bs.Succeeded != n+invalid || bs.Created < 4 || len(batches) < 4 {
		t.Errorf("the fake answered %d batch lines in %d batches, results from %d; want %d, in the first 3 and follow-ups", bs.Succeeded, bs.Created, len(batches), n+invalid)
	}
	if m := s.Endpoint(openaitest.PathChat).Requests; m != 0 {
		t.Errorf("%d synchronous requests, want none", m)
	}
	// Batch prices: half of what the fake's usage costs synchronously.
	price, _ := budget.PriceOf("gpt-4o-mini")
	var sum budget.Cost
	for _, es := range byLine {
		for _, e := range es {
			sum += *e.CostUSD
		}
	}
	if full := price.Cost(bs.PromptTokens, 0, bs.CompletionTokens); sum*2 < full-budget.Cost(len(rs)) || sum*2 > full+budget.Cost(len(rs)) {
		t.Errorf("the ledger's batch answers cost %s, want half of %s", sum, full)
	}
	want := fmt.Sprintf("%d answers checked against the schema, %d asked again (%d re-asks, $%s)", n, invalid, invalid, reaskCost)
	if !strings.Contains(stderr, want) {
		t.Errorf("summary %q does not say %q", stderr, want)
	}
}

// TestSchemaViaBatchAlwaysInvalid: through the Batch API, a line whose
// every answer is invalid ends as invalid_output after --schema-retries
// follow-up batches, its last content kept and every try paid for; a
// refused one keeps its refusal; an answer cut off at the output cap is
// asked again and never parsed; the run exits 1.
func TestSchemaViaBatchAlwaysInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		args    []string
		tries   int
		batches int
		check   func(t *testing.T, rs []schemaBatchResult)
	}{
		{
			name:  "invalid and refused",
			in:    `{"id":"bad","prompt":"review __invalid__"}` + "\n" + `{"id":"no","prompt":"review __refusal__"}` + "\n" + `{"id":"ok","prompt":"review fine"}` + "\n",
			args:  []string{"--schema-retries", "2"},
			tries: 3, batches: 3,
			check: func(t *testing.T, rs []schemaBatchResult) {
				if c := rs[0].Content; c == nil || !strings.Contains(*c, `"name":12345`) || !strings.Contains(rs[0].Error.Message, "at /name: got number, want string") {
					t.Errorf("bad: content %v, message %q: want the invalid answer kept and the validator's message", c, rs[0].Error.Message)
				}
				if rs[1].Refusal == nil || *rs[1].Refusal != openaitest.RefusalMessage || !strings.Contains(rs[1].Error.Message, "refused") {
					t.Errorf("no: refusal %v, message %q: want the refusal kept", rs[1].Refusal, rs[1].Error.Message)
				}
				if r := rs[2]; r.Error != nil || r.Parsed == nil || r.Attempts != 1 {
					t.Errorf("ok: error %+v, parsed %s, attempts %d; want parsed in one try", r.Error, r.Parsed, r.Attempts)
				}
			},
		},
		{
			name:  "truncated",
			in:    reviews(3),
			args:  []string{"--max-tokens", "20", "--schema-retries", "1"},
			tries: 2, batches: 2,
			check: func(t *testing.T, rs []schemaBatchResult) {
				for _, r := range rs {
					if r.Parsed != nil || r.FinishReason != "length" || r.Content == nil {
						t.Errorf("%s: parsed %s, finish %s, content %v: want the cut answer kept, never parsed", r.ID, r.Parsed, r.FinishReason, r.Content)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newStepClock()
			s := openaitest.New(openaitest.Config{Now: clk.Now})
			defer s.Close()
			g := newGB(t, s.URL())
			g.seams.Clock = clk
			out, stderr, code := g.run(context.Background(), tt.in, append([]string{"--via", "batch", "--schema", tenFields}, tt.args...)...)
			if code != 1 {
				t.Fatalf("exit status %d, want 1: %s", code, stderr)
			}
			rs := parseLines[schemaBatchResult](t, out)
			byLine := map[string][]budget.LedgerEntry{}
			for _, e := range ledger(t, g.dir) {
				byLine[e.ID] = append(byLine[e.ID], e)
			}
			for _, r := range rs {
				if r.Error == nil && r.Attempts == 1 {
					continue // the line that fits
				}
				if r.Error == nil || r.Error.Type != "invalid_output" || !strings.Contains(r.Error.Message, fmt.Sprintf("in %d tries", tt.tries)) {
					t.Errorf("%s: error %+v, want invalid_output after %d tries", r.ID, r.Error, tt.tries)
				}
				if r.Parsed != nil || r.Attempts != tt.tries || len(byLine[r.ID]) != tt.tries || r.BatchID == "" {
					t.Errorf("%s: parsed %s, attempts %d, %d ledger lines, batch %q; want none, %d, %d and its last batch", r.ID, r.Parsed, r.Attempts, len(byLine[r.ID]), r.BatchID, tt.tries, tt.tries)
				}
				var c budget.Cost
				var u usage
				for _, e := range byLine[r.ID] {
					c += *e.CostUSD
					u.PromptTokens += e.PromptTokens
					u.CompletionTokens += e.CompletionTokens
				}
				if got := cost(t, r.CostUSD); got != c || c == 0 {
					t.Errorf("%s: cost_usd %s, want its %d tries' %s", r.ID, got, tt.tries, c)
				}
				if r.Usage == nil || r.Usage.PromptTokens != u.PromptTokens || r.Usage.CompletionTokens != u.CompletionTokens {
					t.Errorf("%s: usage %+v, want its tries' %+v", r.ID, r.Usage, u)
				}
			}
			tt.check(t, rs)
			if bs := s.BatchStats(); bs.Created != tt.batches {
				t.Errorf("%d batches, want %d: the first and a follow-up a re-ask", bs.Created, tt.batches)
			}
		})
	}
}

// TestSchemaViaBatchKilledBeforeFollowUp: a --via batch run killed after
// its first batch was collected, before or after the follow-up batch of
// its invalid answers is made, is finished by --resume: every line ends
// parsed, once; no line is answered by the API more than its tries (the
// first batch's invalid answers are not bought again, the follow-up's
// lines are not submitted again), and the ledger counts each answer once.
func TestSchemaViaBatchKilledBeforeFollowUp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		made    bool // the follow-up batch was made before the kill
		created int  // batches made in all
	}{
		{"before the follow-up is made", false, 2},
		{"while the follow-up runs", true, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // a process of its own: nothing of this one is shared
			srv := openaitest.New(openaitest.Config{Seed: 5, Structured: openaitest.StructuredConfig{InvalidRate: 0.2},
				Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual}})
			defer srv.Close()
			dir := t.TempDir()
			const n = 60
			in := reviews(n)
			args := []string{"--via", "batch", "--schema", tenFields}
			out := filepath.Join(dir, "out.jsonl")
			f, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			var errb1 bytes.Buffer
			cmd := command(t, dir, srv.URL(), in, args...)
			cmd.Stdout, cmd.Stderr = f, &errb1
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			polled := func(k int) func() bool {
				return func() bool {
					ids := srv.BatchIDs()
					return len(ids) == k && len(srv.BatchPolls(ids[k-1])) > 0
				}
			}
			alive := func(what string, cond func() bool) {
				t.Helper()
				gone := make(chan struct{})
				wctx, stop := context.WithCancel(ctx)
				defer stop()
				go func() {
					select {
					case err := <-exited:
						exited <- err
						close(gone)
						stop()
					case <-wctx.Done():
					}
				}()
				if err := srv.Wait(wctx, cond); err != nil {
					select {
					case <-gone:
						t.Fatalf("waiting for %s: gptbatch ended: %v: %s", what, <-exited, errb1.String())
					default:
					}
					t.Fatalf("waiting for %s: %v", what, err)
				}
			}
			// A batch is polled only once it is journalled.
			alive("the first batch to be polled", polled(1))
			if !tt.made {
				// The follow-up's upload hangs: the first batch is
				// collected, and its follow-up not yet made.
				srv.Hang(1, http.MethodPost, "/v1/files")
			}
			srv.FinishBatches()
			wait := polled(2)
			if !tt.made {
				wait = func() bool { return srv.Hung() == 1 }
			}
			alive("the follow-up", wait)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-exited
			f.Close()
			srv.Hang(0, "", "")
			if tt.made {
				srv.FinishBatches()
			}
			invalid := someInvalid(t, srv)

			var out2, errb bytes.Buffer
			cmd = command(t, dir, srv.URL(), in, append(args, "--resume", out)...)
			cmd.Stdout, cmd.Stderr = &out2, &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if !tt.made {
				// --resume makes the follow-up: it ends once polled.
				if err := srv.Wait(ctx, polled(2)); err != nil {
					t.Fatalf("waiting for --resume's follow-up: %v", err)
				}
				srv.FinishBatches()
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("--resume: %v: %s", err, errb.String())
			}
			prev, _ := os.ReadFile(out)
			fits := validator(t, tenFields)
			byLine := map[string][]budget.LedgerEntry{}
			for _, e := range ledger(t, dir) {
				byLine[e.ID] = append(byLine[e.ID], e)
			}
			done := map[string]int{}
			for _, r := range append(parseLines[schemaBatchResult](t, string(prev)), parseLines[schemaBatchResult](t, out2.String())...) {
				if r.Error != nil {
					continue
				}
				if err := fits(r.Parsed); err != nil {
					t.Errorf("%s: parsed %s: %v", r.ID, r.Parsed, err)
				}
				done[r.ID]++
				// The result sums its tries, those of the run killed too.
				var c budget.Cost
				for _, e := range byLine[r.ID] {
					c += *e.CostUSD
				}
				if got := cost(t, r.CostUSD); got != c || r.Attempts != len(byLine[r.ID]) {
					t.Errorf("%s: cost_usd %s, attempts %d; want its %d tries' %s", r.ID, got, r.Attempts, len(byLine[r.ID]), c)
				}
			}
			for i := range n {
				if id := fmt.Sprint("r", i); done[id] != 1 {
					t.Errorf("%s parsed %d times over both runs, want once", id, done[id])
				}
			}
			st := srv.BatchStats()
			if st.Created != tt.created || st.Succeeded != n+invalid {
				t.Errorf("the fake: %d batches, %d lines answered; want %d and %d: each line once, and once more each invalid answer", st.Created, st.Succeeded, tt.created, n+invalid)
			}
			if m := ledgerLines(t, dir); m != n+invalid {
				t.Errorf("ledger has %d entries, want %d: each answer once", m, n+invalid)
			}
			if tt.made {
				if s := readState(t, dir); s.TokensWithinDay != st.PromptTokens+st.CompletionTokens {
					t.Errorf("tokens_within_day = %d, the API counted %d: each answer once, and the reservations given back", s.TokensWithinDay, st.PromptTokens+st.CompletionTokens)
				}
			}
		})
	}
}

// TestSchemaViaBatchReaskFails: a line whose follow-up fails for good (a
// 500 past --retries) keeps the answer it paid for: invalid_output with
// its content, usage and cost, saying that asking again failed.
func TestSchemaViaBatchReaskFails(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	s := openaitest.New(openaitest.Config{Now: clk.Now})
	defer s.Close()
	g := newGB(t, s.URL())
	g.seams.Clock = clk
	// The validator's message names the field, and the re-ask sends it:
	// the fake fails a request whose last user message says __status_500__.
	doc := `{"type":"object","properties":{"__status_500__":{"type":"string"}},"required":["__status_500__"],"additionalProperties":false}`
	out, stderr, code := g.run(context.Background(), `{"id":"bad","prompt":"review __invalid__"}`+"\n", "--via", "batch", "--schema", doc, "--retries", "0")
	if code != 1 {
		t.Fatalf("exit status %d, want 1: %s", code, stderr)
	}
	r := parseLines[schemaBatchResult](t, out)[0]
	if r.Error == nil || r.Error.Type != "invalid_output" || !strings.Contains(r.Error.Message, "got number, want string (asking again failed: ") {
		t.Fatalf("error %+v, want invalid_output saying asking again failed", r.Error)
	}
	es := ledger(t, g.dir)
	if len(es) != 2 || es[0].Status != 200 || es[1].Status != 500 {
		t.Fatalf("ledger %+v, want the answer and the failed re-ask", es)
	}
	if c := r.Content; c == nil || !strings.Contains(*c, `"__status_500__":12345`) || r.Attempts != 2 || r.Usage == nil || r.Usage.PromptTokens != es[0].PromptTokens || cost(t, r.CostUSD) != *es[0].CostUSD {
		t.Errorf("content %v, attempts %d, usage %+v, cost_usd %s: want the invalid answer kept, as paid for, after 2 batches", r.Content, r.Attempts, r.Usage, r.CostUSD)
	}
}

// invalidFirstAnswers is how many of n first answers the fake made
// invalid, which must be about a tenth and of every kind.
func invalidFirstAnswers(t *testing.T, s *openaitest.Server, n int) int {
	t.Helper()
	st := s.Structured()
	invalid := 0
	for _, k := range []openaitest.InvalidKind{openaitest.InvalidNotJSON, openaitest.InvalidType, openaitest.InvalidTruncated, openaitest.InvalidRefused} {
		if st.Invalid[k] == 0 {
			t.Errorf("the fake made no %s answer: %+v", k, st.Invalid)
		}
		invalid += st.Invalid[k]
	}
	if invalid < n/20 || invalid > n/5 {
		t.Fatalf("%d invalid first answers of %d, want about a tenth", invalid, n)
	}
	return invalid
}

// someInvalid is how many first answers the fake made invalid, which must
// be some: a test of their follow-ups with none tests nothing.
func someInvalid(t *testing.T, srv *openaitest.Server) int {
	t.Helper()
	invalid := 0
	for _, k := range srv.Structured().Invalid {
		invalid += k
	}
	if invalid == 0 {
		t.Fatal("no invalid first answer: the test tests nothing")
	}
	return invalid
}

// tries adds up a line's ledger entries: its usage, its cost, and the
// cost of its re-asks.
func tries(es []budget.LedgerEntry) (u usage, c, reask budget.Cost) {
	for _, e := range es {
		u.PromptTokens += e.PromptTokens
		u.CompletionTokens += e.CompletionTokens
		u.CachedTokens += e.CachedTokens
		c += *e.CostUSD
		if e.Attempt > 1 {
			reask += *e.CostUSD
		}
	}
	return u, c, reask
}

// parsedOnceWithTries checks the lines answered in outs, the stdout of a
// run and of the runs that resumed it, against the ledger in dir: each
// answered line's attempts, cost_usd and prompt_tokens are those of its
// tries in the ledger, and each of the n lines r0, r1, ... is parsed once
// over all the runs. It returns the answered lines' results and the
// ledger by line.
func parsedOnceWithTries(t *testing.T, dir string, n int, outs ...string) ([]schemaBatchResult, map[string][]budget.LedgerEntry) {
	t.Helper()
	byLine := ledgerByLine(t, dir)
	var answered []schemaBatchResult
	parsed := map[string]int{}
	for _, out := range outs {
		for _, r := range parseLines[schemaBatchResult](t, out) {
			if r.Error != nil {
				continue
			}
			answered = append(answered, r)
			parsed[r.ID]++
			u, c, _ := tries(byLine[r.ID])
			if got := cost(t, r.CostUSD); got != c || r.Attempts != len(byLine[r.ID]) || r.Usage.PromptTokens != u.PromptTokens {
				t.Errorf("%s: attempts %d, cost_usd %s, prompt_tokens %d; want its %d tries in the ledger, %s and %d", r.ID, r.Attempts, got, r.Usage.PromptTokens, len(byLine[r.ID]), c, u.PromptTokens)
			}
		}
	}
	over := "the run"
	if len(outs) > 1 {
		over = fmt.Sprintf("the %d runs", len(outs))
	}
	for i := range n {
		if id := fmt.Sprint("r", i); parsed[id] != 1 {
			t.Errorf("%s parsed %d times over %s, want once", id, parsed[id], over)
		}
	}
	return answered, byLine
}

// ownSchemaLines is n lines like reviews(n), each carrying tenFields as
// its own json_schema format for endpoint (chat's response_format, the
// Responses API's text.format), without a newline but with the file's
// blanks (the API bills the schema compact), and caps[i] as its output cap
// (none when caps is nil).
func ownSchemaLines(endpoint string, n int, caps []int64) string {
	doc := strings.NewReplacer("\n", " ", "\t", " ").Replace(tenFields)
	format := `"response_format":{"type":"json_schema","json_schema":{"name":"review","strict":true,"schema":` + doc + `}}`
	capField := "max_tokens"
	if endpoint == "responses" {
		format = `"text":{"format":{"type":"json_schema","name":"review","strict":true,"schema":` + doc + `}}`
		capField = "max_output_tokens"
	}
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"id":"r%d","prompt":"Extract the reviewer of review %d: Ada, 36, GB, loved it",%s`, i, i, format)
		if caps != nil {
			fmt.Fprintf(&b, `,%q:%d`, capField, caps[i])
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// TestLineOwnSchemaEstimates: without --schema, a line that carries its
// own json_schema format has that schema's tokens in every estimate, by
// the same count as --schema's, chat and responses, synchronously and
// through the Batch API: a dry run says them, the API bills what was
// estimated, a --max-cost that the batch's true cost exceeds refuses it
// before anything is sent, and so do --batch-tokens and the reservation
// (--tpm) that only the schemas' tokens pass.
func TestLineOwnSchemaEstimates(t *testing.T) {
	t.Parallel()
	const n = 3
	for _, endpoint := range []string{"chat", "responses"} {
		t.Run(endpoint, func(t *testing.T) {
			t.Parallel()
			clk := newStepClock()
			s := openaitest.New(openaitest.Config{Now: clk.Now})
			defer s.Close()
			g := newGB(t, s.URL()).loud()
			g.seams.Clock = clk
			ctx := context.Background()
			dry := func(in string, args ...string) (map[string]int64, map[string]int64, string) {
				t.Helper()
				out, stderr, code := g.run(ctx, in, append([]string{"--dry-run", "--endpoint", endpoint}, args...)...)
				if code != 0 {
					t.Fatalf("dry run %v: exit status %d: %s", args, code, stderr)
				}
				shares := map[string]int64{}
				for _, e := range parseLines[struct {
					ID           string `json:"id"`
					SchemaTokens int64  `json:"schema_tokens"`
				}](t, out) {
					shares[e.ID] = e.SchemaTokens
				}
				return estimates(t, out), shares, stderr
			}
			plain, _, _ := dry(reviews(n))
			_, flagShares, _ := dry(reviews(n), "--schema", tenFields)
			own, shares, summary := dry(ownSchemaLines(endpoint, n, nil))
			var total, flagTotal int64
			for id, p := range own {
				if share := shares[id]; share != flagShares[id] || share < 50 || p != plain[id]+share {
					t.Errorf("%s: prompt_tokens %d with its own schema (schema_tokens %d), %d without; --schema's schema_tokens %d",
						id, p, share, plain[id], flagShares[id])
				}
				total, flagTotal = total+shares[id], flagTotal+flagShares[id]
			}
			if want := fmt.Sprintf("(%d of them the schema's)", total); !strings.Contains(summary, want) {
				t.Errorf("dry-run summary %q does not say %q", summary, want)
			}
			viaBatch, _, _ := dry(ownSchemaLines(endpoint, n, nil), "--via", "batch")
			for id, p := range own {
				if viaBatch[id] != p {
					t.Errorf("%s: prompt_tokens %d through the Batch API, %d synchronously", id, viaBatch[id], p)
				}
			}

			// The fake bills the schema so: each answer's prompt tokens
			// are its estimate, synchronously and through the Batch API.
			price, _ := budget.PriceOf("gpt-4o-mini")
			caps := make([]int64, n)
			var billed, billedBatch budget.Cost
			for _, route := range []string{"sync", "batch"} {
				args := []string{"--endpoint", endpoint, "--progress", "never"}
				if route == "batch" {
					args = append(args, "--via", "batch")
				}
				out, stderr, code := g.run(ctx, ownSchemaLines(endpoint, n, nil), args...)
				if code != 0 {
					t.Fatalf("%s: exit status %d: %s", route, code, stderr)
				}
				for i, r := range parseLines[schemaResult](t, out) {
					if r.Error != nil || r.Content == nil || r.Usage == nil {
						t.Fatalf("%s: %s: error %+v, content %v: want an answer", route, r.ID, r.Error, r.Content)
					}
					if r.Usage.PromptTokens != own[r.ID] {
						t.Errorf("%s: %s: prompt_tokens %d billed, %d estimated", route, r.ID, r.Usage.PromptTokens, own[r.ID])
					}
					caps[i] = r.Usage.CompletionTokens
					if route == "batch" {
						billedBatch += cost(t, r.CostUSD)
					} else {
						billed += cost(t, r.CostUSD)
					}
				}
			}

			// With each line's cap its answer's length, the batch costs
			// what those runs billed: a --max-cost below that by half the
			// schemas' price refuses it before anything is sent.
			capped := ownSchemaLines(endpoint, n, caps)
			for _, tt := range []struct {
				route         string
				billed, limit budget.Cost
				args          []string
			}{
				{"sync", billed, billed - price.Cost(flagTotal, 0, 0)/2, nil},
				{"batch", billedBatch, billedBatch - price.Batch().Cost(flagTotal, 0, 0)/2, []string{"--via", "batch"}},
			} {
				before := s.Stats().Requests
				args := append([]string{"--endpoint", endpoint, "--max-cost", tt.limit.String(), "--progress", "never"}, tt.args...)
				out, stderr, code := g.run(ctx, capped, args...)
				if code != 3 || !strings.Contains(stderr, "--max-cost") || !strings.Contains(stderr, "nothing sent") {
					t.Errorf("%s: --max-cost %s, the batch billed %s: exit status %d, want 3, nothing sent: %s", tt.route, tt.limit, tt.billed, code, stderr)
				}
				if sent := s.Stats().Requests - before; sent != 0 || out != "" {
					t.Errorf("%s: --max-cost %s: %d requests sent, %d bytes out; want none", tt.route, tt.limit, sent, len(out))
				}
			}

			// --batch-tokens above the batch without its schemas, below it
			// with them, and --tpm below one line's estimate with its
			// schema, above it without: nothing is sent.
			var plainTotal int64
			for _, p := range plain {
				plainTotal += p
			}
			before := s.Stats().Requests
			batchTokens := strconv.FormatInt(plainTotal+flagTotal/2, 10)
			for _, route := range [][]string{{"--via", "sync"}, {"--via", "batch"}} {
				args := append([]string{"--endpoint", endpoint, "--batch-tokens", batchTokens}, route...)
				if _, stderr, code := g.run(ctx, ownSchemaLines(endpoint, n, nil), args...); code != 3 || !strings.Contains(stderr, "--batch-tokens") {
					t.Errorf("%v: --batch-tokens %s: exit status %d, want 3: %s", route, batchTokens, code, stderr)
				}
			}
			tpm := strconv.FormatInt(plain["r0"]+256+flagShares["r0"]/2, 10)
			out, _, code := g.run(ctx, ownSchemaLines(endpoint, 1, nil), "--endpoint", endpoint, "--tpm", tpm, "--batch-tokens", "0")
			if r := parseLines[schemaResult](t, out)[0]; code != 1 || r.Error == nil || r.Error.Type != "budget" {
				t.Errorf("--tpm %s: exit status %d, %+v: want a budget error", tpm, code, r.Error)
			}
			if sent := s.Stats().Requests - before; sent != 0 {
				t.Errorf("%d requests sent past --batch-tokens and --tpm, want 0", sent)
			}
		})
	}
}

// TestSchemaViaBatchRecoveredFollowUp: a --via batch --schema run stopped
// while the follow-up batch of its invalid answers runs, whose journal is
// then lost, is finished by `batches recover` and --resume exactly as the
// journal would have finished it: the follow-up is recovered with the
// lines it answers and their earlier tries, --resume collects it instead
// of asking its lines again, every line ends parsed once, and the API
// answers (and bills) each line once and each invalid answer once more,
// every answer in the ledger once.
func TestSchemaViaBatchRecoveredFollowUp(t *testing.T) {
	t.Parallel()
	clk := newStepClock()
	srv := openaitest.New(openaitest.Config{Now: clk.Now, Seed: 5, Structured: openaitest.StructuredConfig{InvalidRate: 0.2}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = clk
	journal := filepath.Join(g.dir, "usage.batches.jsonl")
	const n = 60
	in := reviews(n)
	args := []string{"--via", "batch", "--schema", tenFields}

	// Stopped once the follow-up (chunk 2) is submitted and journalled.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, stderr, code := g.runUntil(ctx, cancel, in, "chunk=2", append(args, "--verbose")...)
	if code != 130 {
		t.Fatalf("interrupted run: exit status %d, want 130: %s", code, stderr)
	}
	prev := filepath.Join(g.dir, "out.jsonl")
	if err := os.WriteFile(prev, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	invalid := 0
	for _, k := range srv.Structured().Invalid {
		invalid += k
	}
	journalled, _, err := batchapi.ReadJournal(journal, time.Time{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if invalid == 0 || len(journalled) != 2 || !journalled[0].Collected || journalled[1].Collected || len(journalled[1].Items) != invalid {
		t.Fatalf("%d invalid first answers, journal %+v: want some, the first batch collected and the follow-up of them running", invalid, journalled)
	}
	followUp := journalled[1]

	// The journal is lost, and rebuilt from the API.
	if err := os.Remove(journal); err != nil {
		t.Fatal(err)
	}
	loud := slices.DeleteFunc(slices.Clone(g.args), func(a string) bool { return a == "--quiet" })
	var rout, rerr bytes.Buffer
	if code := Run(context.Background(), slices.Concat(loud, []string{"batches", "recover"}), strings.NewReader(""), &rout, &rerr, g.seams); code != 0 {
		t.Fatalf("batches recover: exit status %d: %s", code, rerr.String())
	}
	rebuilt, _, err := batchapi.ReadJournal(journal, time.Time{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(rebuilt) != 1 || rebuilt[0].BatchID != followUp.BatchID || !reflect.DeepEqual(rebuilt[0].Items, followUp.Items) {
		t.Errorf("rebuilt journal %+v\nwant the follow-up as submitted: %+v", rebuilt, followUp.Items)
	}

	out2, stderr2, code := g.run(context.Background(), in, append(args, "--resume", prev)...)
	if code != 0 {
		t.Fatalf("--resume: exit status %d: %s", code, stderr2)
	}
	// Whatever is left running runs to its end, and bills, as the API's
	// batches do.
	srv.FinishBatches()

	answered, byLine := parsedOnceWithTries(t, g.dir, n, out, out2)
	fits := validator(t, tenFields)
	for _, r := range answered {
		if err := fits(r.Parsed); err != nil {
			t.Errorf("%s: parsed %s: %v", r.ID, r.Parsed, err)
		}
	}
	st := srv.BatchStats()
	billed := st.PromptTokens + st.CompletionTokens
	var counted int64
	for _, es := range byLine {
		counted += ledgerTokens(es)
	}
	t.Logf("the API: %d batches, %d lines answered, %d tokens billed; the ledger: %d tokens", st.Created, st.Succeeded, billed, counted)
	if st.Created != 2 || st.Succeeded != n+invalid {
		t.Errorf("the fake: %d batches, %d lines answered; want 2 and %d: each line once, and once more each invalid answer", st.Created, st.Succeeded, n+invalid)
	}
	if counted != billed {
		t.Errorf("the ledger counts %d tokens, the API billed %d: want every answer paid for counted once", counted, billed)
	}
}

// TestSchemaViaBatchKilledWhileCreatingFollowUp: a --via batch --schema
// run killed while the create of its follow-up batch is in flight has
// made a follow-up it never heard of; --resume finds it by its tags and
// collects it, with the lines it answers and their earlier tries, rather
// than read the invalid answers again and make another: the API answers
// (and bills) each line once and each invalid answer once more, and each
// line's result sums its tries.
func TestSchemaViaBatchKilledWhileCreatingFollowUp(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Seed: 5, Structured: openaitest.StructuredConfig{InvalidRate: 0.2},
		Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual}})
	defer srv.Close()
	g := newGB(t, srv.URL())
	const n = 60
	in := reviews(n)
	args := []string{"--via", "batch", "--schema", tenFields}
	cmd, prev := startChild(t, g, in, args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	created := func(k int) func() bool { return func() bool { return srv.BatchStats().Created >= k } }
	if err := srv.Wait(ctx, created(1)); err != nil {
		t.Fatalf("waiting for the first batch: %v", err)
	}
	// The first batch ends; the follow-up of its invalid answers is
	// made, and the answer to its create held until the run is killed.
	srv.HoldCreates(1)
	srv.FinishBatches()
	if err := srv.Wait(ctx, created(2)); err != nil {
		t.Fatalf("waiting for the follow-up: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	srv.FinishBatches()
	invalid := someInvalid(t, srv)

	// A batch --resume makes runs to its end, as the API's do.
	out, stderr, code := resumeFinishing(ctx, g, srv, 3, in, args, prev)
	if code != 0 {
		t.Fatalf("--resume: exit status %d: %s", code, stderr)
	}
	first, err := os.ReadFile(prev)
	if err != nil {
		t.Fatal(err)
	}
	parsedOnceWithTries(t, g.dir, n, string(first), out)
	st := srv.BatchStats()
	t.Logf("the API: %d batches, %d lines answered, %d tokens billed", st.Created, st.Succeeded, st.PromptTokens+st.CompletionTokens)
	if st.Created != 2 || st.Succeeded != n+invalid {
		t.Errorf("the fake: %d batches, %d lines answered; want 2 and %d: each line once, and once more each invalid answer", st.Created, st.Succeeded, n+invalid)
	}
	if counted := ledgerTokens(ledger(t, g.dir)); counted != st.PromptTokens+st.CompletionTokens {
		t.Errorf("the ledger counts %d tokens, the API billed %d: want every answer paid for counted once", counted, st.PromptTokens+st.CompletionTokens)
	}
}
