package pipeline

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/internal/schema"
	"github.com/gptbatch/gptbatch/internal/tokens"
	"github.com/gptbatch/gptbatch/jsonl"
)

// person is the schema the decoder tests hold answers to.
const person = `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}`

// chatBody is a chat completion whose choices are given as JSON.
func chatBody(choices ...string) string {
	return `{"model":"gpt-4o-mini-2024-07-18","choices":[` + strings.Join(choices, ",") + `],"usage":{"prompt_tokens":60,"completion_tokens":12,"total_tokens":72}}`
}

// choice is a chat choice's JSON.
func choice(i int, content, refusal, finish string) string {
	c, r := "null", "null"
	if content != "" {
		c = fmt.Sprintf("%q", content)
	}
	if refusal != "" {
		r = fmt.Sprintf("%q", refusal)
	}
	return fmt.Sprintf(`{"index":%d,"message":{"role":"assistant","content":%s,"refusal":%s},"finish_reason":%q}`, i, c, r, finish)
}

// TestAnswersHeldToSchema: the decoders, the one place an answer becomes
// a result on either route, give a fitting answer its parsed value and an
// answer that does not fit an invalid_output error with its content kept;
// an answer cut off at the cap is never parsed, even when it parses.
func TestAnswersHeldToSchema(t *testing.T) {
	s, err := schema.Parse(person)
	if err != nil {
		t.Fatal(err)
	}
	const ada = `{"name": "Ada",  "age": 36}`
	tests := []struct {
		name, endpoint, body string
		parsed, kind         string // kind: the invalid answer's, "" when none
	}{
		{"valid", jsonl.EndpointChat, chatBody(choice(0, ada, "", "stop")), `{"name":"Ada","age":36}`, ""},
		{"cut off, though it parses", jsonl.EndpointChat, chatBody(choice(0, ada, "", "length")), "", "truncated"},
		{"not JSON", jsonl.EndpointChat, chatBody(choice(0, "```json\n"+ada+"\n```", "", "stop")), "", "not_json"},
		{"wrong type", jsonl.EndpointChat, chatBody(choice(0, `{"name":"Ada","age":"36"}`, "", "stop")), "", "mismatch"},
		{"refused", jsonl.EndpointChat, chatBody(choice(0, "", "I can't", "stop")), "", "refused"},
		{"content filter", jsonl.EndpointChat, chatBody(choice(0, `{"name":"A`, "", "content_filter")), "", "refused"},
		{"tool call", jsonl.EndpointChat, `{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{}}`, "", ""},
		{"n = 2", jsonl.EndpointChat, chatBody(choice(1, `{"name":"Bo","age":7}`, "", "stop"), choice(0, ada, "", "stop")), `[{"name":"Ada","age":36},{"name":"Bo","age":7}]`, ""},
		{"n = 2, one cut off", jsonl.EndpointChat, chatBody(choice(0, ada, "", "stop"), choice(1, `{"name":"Bo",`, "", "length")), "", "truncated"},
		{"responses", jsonl.EndpointResponses, `{"model":"m","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":` + fmt.Sprintf("%q", ada) + `}]}],"usage":{}}`, `{"name":"Ada","age":36}`, ""},
		{"responses cut off", jsonl.EndpointResponses, `{"model":"m","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[{"type":"message","content":[{"type":"output_text","text":` + fmt.Sprintf("%q", ada) + `}]}],"usage":{}}`, "", "truncated"},
		{"responses refused", jsonl.EndpointResponses, `{"model":"m","status":"completed","output":[{"type":"message","content":[{"type":"refusal","refusal":"no"}]}],"usage":{}}`, "", "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _, _ := testRunner(t, Config{Schema: s})
			it := routeItem(t, r, tt.endpoint, `"who is Ada?"`)
			if it.schema == nil {
				t.Fatal("the line is not held to --schema")
			}
			ans, err := resultFromBody(it, 200, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			res := ans.results[0]
			if string(res.Parsed) != tt.parsed {
				t.Errorf("parsed = %s, want %s", res.Parsed, tt.parsed)
			}
			switch {
			case tt.kind == "" && (ans.invalid != nil || res.Error != nil):
				t.Errorf("invalid %+v, error %+v; want neither", ans.invalid, res.Error)
			case tt.kind != "" && (ans.invalid == nil || ans.invalid.verdict.Kind.String() != tt.kind || res.Error == nil || res.Error.Type != jsonl.ErrInvalidOutput):
				t.Errorf("invalid %+v, error %+v; want %s, invalid_output", ans.invalid, res.Error, tt.kind)
			case tt.kind != "" && tt.kind != "refused" && len(res.Content) < 5:
				t.Errorf("content %s: the invalid answer must be kept", res.Content)
			}
		})
	}
}

// tenFields is a 10-field extraction schema, and tenFieldAnswer an answer
// that fits it: the repository's fixtures, as internal/schema's
// BenchmarkValidate has them.
var (
	tenFields      = fixture("../testdata/schema/ten-fields.json")
	tenFieldAnswer = fixture("../testdata/schema/ten-fields-answer.json")
)

// fixture is a file of the repository's testdata, without its last newline.
func fixture(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// BenchmarkResultFromBodySchema is a chat answer read into its result
// with and without a 10-field schema to hold it to: the difference is
// what checking costs on the path every answer takes.
func BenchmarkResultFromBodySchema(b *testing.B) {
	s, err := schema.Parse(tenFields)
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(chatBody(choice(0, tenFieldAnswer, "", "stop")))
	for _, bc := range []struct {
		name string
		s    *schema.Schema
	}{{"none", nil}, {"10 fields", s}} {
		b.Run(bc.name, func(b *testing.B) {
			r := newRunner(b.Context(), Config{Schema: bc.s, Model: "gpt-4o-mini", Tokens: tokens.Counter{}})
			req, err := jsonl.NewReader(strings.NewReader("\"who?\"\n"), jsonl.Options{}).Next()
			if err != nil {
				b.Fatal(err)
			}
			it := r.prepare(req, false)
			b.ReportAllocs()
			for b.Loop() {
				ans, err := resultFromBody(it, 200, body)
				if err != nil || (bc.s != nil && ans.results[0].Parsed == nil) {
					b.Fatal(err, ans.invalid)
				}
			}
		})
	}
}

// TestOwnSchemaCountKeptByModel: a line's own json_schema is counted once
// a run for each model and way of counting, and what is kept is the count
// a fresh one gives, never another model's: lines for gpt-4o-mini
// (o200k_base) and gpt-4 (cl100k_base), exact and by the byte bound,
// carrying the same schema, in turn.
func TestOwnSchemaCountKeptByModel(t *testing.T) {
	body := []byte(`{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":` + tenFields + `}}}`)
	r, _, _ := testRunner(t, Config{})
	type count struct {
		model string
		exact bool
	}
	counts := []count{{"gpt-4o-mini", true}, {"gpt-4", true}, {"gpt-4o-mini", false}, {"gpt-4", false}}
	fresh := map[count]int64{}
	for _, c := range counts {
		if err := r.cfg.Tokens.Build(c.model); err != nil {
			t.Fatal(err)
		}
		fresh[c] = int64(schema.FormatTokens(jsonl.EndpointChat, body, schemaCounter(&r.cfg, c.model, c.exact)))
	}
	if fresh[counts[0]] == fresh[counts[1]] {
		t.Fatalf("%s and %s count the schema alike (%d): the test cannot tell them apart", counts[0].model, counts[1].model, fresh[counts[0]])
	}
	for range 3 {
		for _, c := range counts {
			if got := r.cfg.schemas.ownTokens(&r.cfg, jsonl.EndpointChat, body, c.model, c.exact); got != fresh[c] {
				t.Errorf("ownTokens(%s, exact %t) = %d, want %d (a fresh count)", c.model, c.exact, got, fresh[c])
			}
		}
	}
}
