package pipeline

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/jsonl"
)

// routeFields are the result fields that name the route a line took: all
// else is the same whichever way the answer came.
var routeFields = regexp.MustCompile(`,"(batch_id|latency_ms|attempts|cost_usd)":("[^"]*"|[^,}]*)`)

// One result schema on every route: an answer body gives the same result
// line read as a synchronous answer and as a line of a Batch API output
// file (through the spool the batch route keeps its results in), but for
// the fields that name the route.
func TestSameResultEitherRoute(t *testing.T) {
	vec := func(fs ...float32) string {
		b := make([]byte, 4*len(fs))
		for i, f := range fs {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
		}
		return `"` + base64.StdEncoding.EncodeToString(b) + `"`
	}
	const (
		chatUsage  = `"usage":{"prompt_tokens":9,"completion_tokens":10,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}`
		toolCalls  = `[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]`
		respUsage  = `"usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":4},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":50}`
		embedUsage = `"usage":{"prompt_tokens":5,"total_tokens":5}`
	)
	chat := func(choices string) string {
		return `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18","choices":` + choices + `,` + chatUsage + `,"service_tier":"default"}`
	}
	for _, tt := range []struct {
		name, endpoint, line, body string
	}{
		{"chat", jsonl.EndpointChat, `"hi"`,
			chat(`[{"index":0,"message":{"role":"assistant","content":"Hello <there> & \u2028","refusal":null},"logprobs":null,"finish_reason":"stop"}]`)},
		{"chat reasoning tokens", jsonl.EndpointChat, `{"model":"o3-mini","prompt":"think"}`,
			`{"id":"c","object":"chat.completion","model":"o3-mini-2025-01-31","choices":[{"index":0,"message":{"role":"assistant","content":"42"},"finish_reason":"stop"}],` +
				`"usage":{"prompt_tokens":12,"completion_tokens":300,"total_tokens":312,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":256}}}`},
		{"chat tool calls, content null", jsonl.EndpointChat, `"weather?"`,
			chat(`[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":` + toolCalls + `},"finish_reason":"tool_calls"}]`)},
		{"chat tool calls, content empty", jsonl.EndpointChat, `"weather?"`,
			chat(`[{"index":0,"message":{"role":"assistant","content":"","tool_calls":` + toolCalls + `},"finish_reason":"tool_calls"}]`)},
		{"chat function_call (deprecated functions)", jsonl.EndpointChat, `"weather?"`,
			chat(`[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},"refusal":null},"finish_reason":"function_call"}]`)},
		{"chat content null, no tools", jsonl.EndpointChat, `"say nothing"`,
			chat(`[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"stop"}]`)},
		{"chat n=3, out of order", jsonl.EndpointChat, `{"prompt":"pick","n":3}`,
			chat(`[{"index":1,"message":{"role":"assistant","content":"b"},"finish_reason":"stop"},{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"length"},{"index":2,"message":{"role":"assistant","content":null,"refusal":"no"},"finish_reason":"stop"}]`)},
		{"chat logprobs", jsonl.EndpointChat, `{"prompt":"hi","logprobs":true}`,
			chat(`[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":{"content":[{"token":"Hi","logprob":-0.01,"bytes":[72,105],"top_logprobs":[]}],"refusal":null},"finish_reason":"stop"}]`)},
		{"chat logprobs, n=2", jsonl.EndpointChat, `{"prompt":"hi","logprobs":true,"n":2}`,
			chat(`[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":{"content":[{"token":"Hi","logprob":-0.01}]},"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"Yo"},"logprobs":{"content":[{"token":"Yo","logprob":-2.5}]},"finish_reason":"stop"}]`)},
		{"chat refusal", jsonl.EndpointChat, `"something bad"`,
			chat(`[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]`)},
		{"embeddings, one input", jsonl.EndpointEmbeddings, `"embed me"`,
			`{"object":"list","data":[{"object":"embedding","index":0,"embedding":` + vec(0.5, -1, 1e-7) + `}],"model":"text-embedding-3-small",` + embedUsage + `}`},
		{"embeddings, a list", jsonl.EndpointEmbeddings, `{"input":["a","b"]}`,
			`{"object":"list","data":[{"object":"embedding","index":1,"embedding":` + vec(2) + `},{"object":"embedding","index":0,"embedding":` + vec(1) + `}],"model":"text-embedding-3-small",` + embedUsage + `}`},
		{"embeddings, floats asked for", jsonl.EndpointEmbeddings, `{"input":"x","encoding_format":"float"}`,
			`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25, -0.5]}],"model":"text-embedding-3-small",` + embedUsage + `}`},
		{"responses", jsonl.EndpointResponses, `{"model":"o4-mini","input":"hi"}`,
			`{"id":"resp_1","object":"response","status":"completed","model":"o4-mini-2025-04-16","output":[{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"Hello","annotations":[]},{"type":"output_text","text":" world","annotations":[]}]}],` + respUsage + `}`},
		{"responses function calls", jsonl.EndpointResponses, `{"input":"weather in Paris and Rome?"}`,
			`{"id":"resp_2","object":"response","status":"completed","model":"gpt-4o-mini-2024-07-18","output":[{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}","status":"completed"},{"type":"function_call","id":"fc_2","call_id":"call_2","name":"get_weather","arguments":"{\"city\":\"Rome\"}","status":"completed"}],` + respUsage + `}`},
		{"responses refusal", jsonl.EndpointResponses, `"something bad"`,
			`{"id":"resp_3","object":"response","status":"completed","model":"gpt-4o-mini-2024-07-18","output":[{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"refusal","refusal":"I can't."}]}],` + respUsage + `}`},
		{"responses incomplete", jsonl.EndpointResponses, `"long"`,
			`{"id":"resp_4","object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-4o-mini-2024-07-18","output":[{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"Once upon","annotations":[]}]}],` + respUsage + `}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sync := syncResultLine(t, tt.endpoint, tt.line, tt.body)
			batch := batchResultLine(t, tt.endpoint, tt.line, tt.body)
			if !strings.Contains(batch, `"batch_id":"batch_1"`) {
				t.Errorf("via batch: %s, want batch_id batch_1", batch)
			}
			if s, b := routeFields.ReplaceAllString(sync, ""), routeFields.ReplaceAllString(batch, ""); s != b {
				t.Errorf("the same answer, route fields aside:\nsync  %s\nbatch %s", s, b)
			}
		})
	}
}

// routeItem is line, given to endpoint, prepared as run would prepare it.
func routeItem(t *testing.T, r *runner, endpoint, line string) *item {
	t.Helper()
	req, err := jsonl.NewReader(strings.NewReader(line+"\n"), jsonl.Options{Endpoint: endpoint}).Next()
	if err != nil {
		t.Fatal(err)
	}
	it := r.prepare(req, false)
	if it.result != nil {
		t.Fatalf("prepare(%s) = %+v", line, it.result.Error)
	}
	return it
}

// resultLine is res as the writer writes it.
func resultLine(t *testing.T, res *jsonl.Result) string {
	t.Helper()
	var b bytes.Buffer
	w := jsonl.NewWriter(&b)
	if err := w.Write(res); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// syncResultLine is the result line of body, answered to line synchronously.
func syncResultLine(t *testing.T, endpoint, line, body string) string {
	t.Helper()
	r, _, _ := testRunner(t, Config{})
	it := routeItem(t, r, endpoint, line)
	it.attempts = 1
	ans, err := resultFromBody(it, 200, []byte(body))
	if err != nil {
		t.Fatalf("resultFromBody: %v", err)
	}
	// As sendLine finishes an answered line's result.
	res := ans.results[0]
	res.LatencyMS = 412
	return resultLine(t, res)
}

// batchResultLine is the result line of body, answered to line as a line
// of a Batch API output file, collected and spooled as --via batch does.
func batchResultLine(t *testing.T, endpoint, line, body string) string {
	t.Helper()
	r, _, _ := testRunner(t, Config{Via: ViaBatch})
	it := routeItem(t, r, endpoint, line)
	records, err := newSpool(t.TempDir(), "lines")
	if err != nil {
		t.Fatal(err)
	}
	defer records.close()
	url := it.batchURL()
	rec := recordOf(it, url, batchapi.LineHash(url, it.body), &r.cfg)
	off, err := records.append(appendRecord(nil, &rec), it.body)
	if err != nil {
		t.Fatal(err)
	}
	s := &submitter{r: r}
	l := bline{line: int32(it.req.Line), rec: off, tries: 1}
	b := &tbatch{id: "batch_1", endpoint: url, model: it.model}
	b.heads = s.head(nil, nil, &l, appendHead(nil, &rec))
	b.lines = []bline{l}
	c := newCollector(r, &batchRun{records: records}, b, nil)
	out := c.parseLine([]byte(`{"id":"batch_req_1","custom_id":"line-1","response":{"status_code":200,"request_id":"req_1","body":` + body + `},"error":null}`))
	if out.bad != nil || out.res == nil {
		t.Fatalf("parseLine: %v, result %v", out.bad, out.res)
	}
	// Through the spool a result ahead of its turn waits in.
	spooled, _ := out.res.AppendBinary(nil)
	res := new(jsonl.Result)
	if err := res.UnmarshalBinary(spooled); err != nil {
		t.Fatal(err)
	}
	return resultLine(t, res)
}
