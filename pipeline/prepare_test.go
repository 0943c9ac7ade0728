package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/internal/tokens"
	"github.com/gptbatch/gptbatch/jsonl"
)

// BenchmarkTokenizeStage is the tokenize stage over many lines, which it
// spreads over every core: compare -cpu 1,2.
func BenchmarkTokenizeStage(b *testing.B) {
	line := strings.Repeat("The quick brown fox jumps over the lazy dog; naïve café 12345. ", 16)
	cfg := &Config{Tokens: tokens.Counter{}, Model: "gpt-4o-mini"}
	if err := (tokens.Counter{}).Build(cfg.Model); err != nil {
		b.Fatal(err)
	}
	r := newRunner(context.Background(), *cfg)
	const lines = 2000
	b.SetBytes(int64(lines * len(line)))
	for b.Loop() {
		in := make(chan *jsonl.Request)
		out := make(chan *item, lines)
		go func() {
			defer close(in)
			for i := range lines {
				in <- &jsonl.Request{Line: i + 1, ID: "x", Body: map[string]json.RawMessage{"messages": mustJSON([]map[string]string{{"role": "user", "content": line}})}}
			}
		}()
		if err := orderedMap(context.Background(), runtime.GOMAXPROCS(0), 2*runtime.GOMAXPROCS(0), fromChan(in), out, func(req *jsonl.Request) *item { return r.prepare(req, true) }, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrepareOwnSchema is one chat line prepared, counted exactly,
// without a format and with a ~1.5 KB json_schema format of its own, the
// same on every line as a batch built with jq carries it: the difference
// is what the line's own schema costs its estimate. Run with -cpu 1: a
// line is prepared on one goroutine, so ns/op is its CPU.
func BenchmarkPrepareOwnSchema(b *testing.B) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog; naïve café 12345. ", 16)
	props := make([]string, 20)
	for i := range props {
		props[i] = fmt.Sprintf(`"field_%02d":{"type":"string","description":"the %d-th thing the document says about its subject, quoted"}`, i, i)
	}
	format := `{"type":"json_schema","json_schema":{"name":"extract","strict":true,"schema":{"type":"object","properties":{` + strings.Join(props, ",") + `},"required":[],"additionalProperties":false}}}`
	cfg := Config{Tokens: tokens.Counter{}, Model: "gpt-4o-mini"}
	if err := cfg.Tokens.Build(cfg.Model); err != nil {
		b.Fatal(err)
	}
	r := newRunner(context.Background(), cfg)
	for _, bench := range []struct {
		name   string
		text   string
		format string
	}{
		{"short", "say 17 in words", ""},
		{"none", text, ""},
		{"own-schema", text, format},
	} {
		b.Run(bench.name, func(b *testing.B) {
			body := map[string]json.RawMessage{"messages": mustJSON([]map[string]string{{"role": "user", "content": bench.text}})}
			if bench.format != "" {
				body["response_format"] = json.RawMessage(bench.format)
			}
			req := &jsonl.Request{Line: 1, ID: "x", Body: body}
			if it := r.prepare(req, true); it.result != nil || (bench.format != "") != (it.schemaTokens > 0) {
				b.Fatalf("prepare: result %+v, schema tokens %d", it.result, it.schemaTokens)
			}
			b.ReportAllocs()
			for b.Loop() {
				r.prepare(req, true)
			}
		})
	}
}

// BenchmarkPrepareTools is one chat line prepared, counted exactly, with
// the function definitions of a support agent (five functions, about
// 1.6 KB), as tools and as the deprecated functions: what counting them
// costs a line's prepare. Run with -cpu 1, as BenchmarkPrepareOwnSchema.
func BenchmarkPrepareTools(b *testing.B) {
	defs := make([]string, 5)
	for i := range defs {
		defs[i] = fmt.Sprintf(`{"name":"action_%d","description":"Do the %d-th thing a support agent may do for a customer.","parameters":{"type":"object","properties":{`+
			`"order_id":{"type":"string","pattern":"^[A-Z]{2}-[0-9]{6}$","description":"The order number, like AB-123456"},`+
			`"reason":{"type":"string","enum":["damaged","late","wrong_item","not_received","changed_mind"],"description":"Why the customer asks"},`+
			`"amount":{"type":"number","minimum":0,"description":"Amount in the order's currency"}},"required":["order_id","reason"]}}`, i, i)
	}
	functions := "[" + strings.Join(defs, ",") + "]"
	tools := `[{"type":"function","function":` + strings.Join(defs, `},{"type":"function","function":`) + `}]`
	cfg := Config{Tokens: tokens.Counter{}, Model: "gpt-4o-mini"}
	if err := cfg.Tokens.Build(cfg.Model); err != nil {
		b.Fatal(err)
	}
	r := newRunner(context.Background(), cfg)
	for _, bench := range []struct{ name, field, defs string }{
		{"tools", "tools", tools},
		{"functions", "functions", functions},
	} {
		b.Run(bench.name, func(b *testing.B) {
			body := map[string]json.RawMessage{
				"messages":  mustJSON([]map[string]string{{"role": "user", "content": "My parcel AB-123456 arrived damaged; can I get my money back?"}}),
				bench.field: json.RawMessage(bench.defs),
			}
			req := &jsonl.Request{Line: 1, ID: "x", Body: body}
			if it := r.prepare(req, true); it.result != nil {
				b.Fatalf("prepare: result %+v", it.result)
			}
			b.ReportAllocs()
			for b.Loop() {
				r.prepare(req, true)
			}
		})
	}
}

// TestToolCountsKeptApart: the count of a line's function definitions is
// kept for the lines that carry the same ones, and what a line gets is
// always the count a fresh one gives its whole request: never another tool
// set's, nor the same bytes' as the other field (tools and the deprecated
// functions are counted by different rules), nor another model's or way of
// counting's. Lines for gpt-4o-mini and gpt-4 (which count a function
// differently), exactly and by the byte bound, chat and Responses API, in
// turn, three times.
func TestToolCountsKeptApart(t *testing.T) {
	const (
		weather = `{"name":"get_weather","description":"Get the weather in a city.","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}},"required":["city"]}}`
		refund  = `{"name":"refund","description":"Refund an order.","parameters":{"type":"object","properties":{"order_id":{"type":"string","description":"The order"}}}}`
	)
	asTools := func(defs ...string) string {
		return `[{"type":"function","function":` + strings.Join(defs, `},{"type":"function","function":`) + `}]`
	}
	asFlat := func(defs ...string) string { // the Responses API's tools
		flat := make([]string, len(defs))
		for i, d := range defs {
			flat[i] = `{"type":"function",` + d[1:]
		}
		return "[" + strings.Join(flat, ",") + "]"
	}
	lines := []struct {
		name             string
		endpoint         string
		tools, functions string
	}{
		{"weather", jsonl.EndpointChat, asTools(weather), ""},
		{"weather and refund", jsonl.EndpointChat, asTools(weather, refund), ""},
		{"weather as functions", jsonl.EndpointChat, "", "[" + weather + "]"},
		{"weather's functions list as tools", jsonl.EndpointChat, "[" + weather + "]", ""},
		{"both", jsonl.EndpointChat, asTools(refund), "[" + weather + "]"},
		{"responses", jsonl.EndpointResponses, asFlat(weather, refund), ""},
	}
	r, _, _ := testRunner(t, Config{})
	r.cfg.countLater = true // so that prepare counts by the byte bound when not exact
	const messages = `[{"role":"user","content":"Is it raining in Oslo?"}]`
	for _, model := range []string{"gpt-4o-mini", "gpt-4"} {
		if err := r.cfg.Tokens.Build(model); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 3 {
		for _, model := range []string{"gpt-4o-mini", "gpt-4"} {
			for _, exact := range []bool{true, false} {
				for _, l := range lines {
					body := map[string]json.RawMessage{"model": mustJSON(model)}
					var tools, functions json.RawMessage
					if l.tools != "" {
						tools = json.RawMessage(l.tools)
						body["tools"] = tools
					}
					if l.functions != "" {
						functions = json.RawMessage(l.functions)
						body["functions"] = functions
					}
					if l.endpoint == jsonl.EndpointChat {
						body["messages"] = json.RawMessage(messages)
					} else {
						body["input"] = json.RawMessage(messages)
					}
					it := r.prepare(&jsonl.Request{Line: 1, ID: "x", Endpoint: l.endpoint, Body: body}, exact)
					if it.result != nil || it.exact != exact {
						t.Fatalf("%s: prepare: result %+v, exact %v, want exact %v", l.name, it.result, it.exact, exact)
					}
					msgs := json.RawMessage(messages)
					if l.endpoint == jsonl.EndpointResponses {
						var err error
						if msgs, err = responsesMessages(nil, json.RawMessage(messages)); err != nil {
							t.Fatal(err)
						}
					}
					want, err := r.cfg.Tokens.Chat(model, msgs, tools, functions, exact)
					if err != nil {
						t.Fatal(err)
					}
					if it.prompt != want {
						t.Errorf("round %d, %s, %s, exact %v: prompt tokens = %d, want %d (a fresh count)", round, l.name, model, exact, it.prompt, want)
					}
				}
			}
		}
	}
}
