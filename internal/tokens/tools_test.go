package tokens

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// TestChatTools: a request's function definitions, as tools or as the
// deprecated functions, count as the API bills them: the cookbook's
// example as many tokens as the API reported for it.
func TestChatTools(t *testing.T) {
	tools := `[{"type":"function","function":` + openaitest.CookbookFunction + `}]`
	functions := `[` + openaitest.CookbookFunction + `]`
	for _, tt := range []struct {
		model string
		want  int64 // the API's prompt_tokens, as the cookbook shows them
	}{
		{"gpt-4o", 101}, {"gpt-4o-mini", 101}, {"gpt-4", 105}, {"gpt-3.5-turbo", 105},
	} {
		for _, in := range []struct{ name, tools, functions string }{
			{"tools", tools, ""}, {"functions", "", functions},
		} {
			got, err := (Counter{}).Chat(tt.model, json.RawMessage(openaitest.CookbookMessages), raw(in.tools), raw(in.functions), true)
			if err != nil || got != tt.want {
				t.Errorf("Chat(%s, the cookbook's example as %s) = %d, %v; want %d", tt.model, in.name, got, err, tt.want)
			}
		}
	}
}

// TestChatToolsNeverBelowBilled: for realistic tool sets (flat, strict
// and nested, long enums, several functions, the deprecated functions,
// the Responses API's shape), the estimate is never below what the fake
// API bills, which follows the cookbook, on models of both encodings, nor
// is the byte bound below the estimate. How far above it is, is logged:
// go test -v -run ChatToolsNeverBelowBilled ./internal/tokens
func TestChatToolsNeverBelowBilled(t *testing.T) {
	sets := toolSets(t)
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	const messages = `[{"role":"system","content":"You help the customers of a shop. Use the tools when they help."},` +
		`{"role":"user","content":"My parcel to Norway arrived damaged; can I get my money back?"}]`
	for _, name := range slices.Sorted(maps.Keys(sets)) {
		set := sets[name]
		for _, model := range []string{"gpt-4o-mini", "gpt-4.1-mini", "gpt-4"} {
			body := map[string]json.RawMessage{"model": mustJSON(model), "messages": json.RawMessage(messages), "max_tokens": json.RawMessage("1")}
			if set.Tools != nil {
				body["tools"] = set.Tools
			}
			if set.Functions != nil {
				body["functions"] = set.Functions
			}
			var usage struct {
				Usage struct {
					PromptTokens int64 `json:"prompt_tokens"`
				} `json:"usage"`
			}
			postJSON(t, srv.URL()+"/chat/completions", body, &usage)
			billed := usage.Usage.PromptTokens
			est := check(t, name+", "+model, model, json.RawMessage(messages), set.Tools, set.Functions, billed)
			plain, err := (Counter{}).Chat(model, json.RawMessage(messages), nil, nil, true)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%-26s %-13s billed %4d (tools %4d), estimate %4d: %+d", name, model, billed, billed-plain, est, est-billed)

			if set.Tools == nil {
				continue
			}
			// The Responses API's tools are the function definitions
			// themselves, with their type.
			var tools []map[string]json.RawMessage
			if err := json.Unmarshal(set.Tools, &tools); err != nil {
				t.Fatal(err)
			}
			flat := make([]map[string]json.RawMessage, len(tools))
			for i, tool := range tools {
				var f map[string]json.RawMessage
				if err := json.Unmarshal(tool["function"], &f); err != nil {
					t.Fatal(err)
				}
				f["type"] = tool["type"]
				flat[i] = f
			}
			var resp struct {
				Usage struct {
					InputTokens int64 `json:"input_tokens"`
				} `json:"usage"`
			}
			postJSON(t, srv.URL()+"/responses", map[string]any{"model": model, "input": json.RawMessage(messages), "tools": flat}, &resp)
			check(t, name+", responses, "+model, model, json.RawMessage(messages), mustJSON(flat), nil, resp.Usage.InputTokens)
		}
	}
}

// check fails the test if Chat's estimate of a request is below billed,
// or its byte bound below the estimate, and returns the estimate.
func check(t *testing.T, what, model string, messages, tools, functions json.RawMessage, billed int64) int64 {
	t.Helper()
	est, err := (Counter{}).Chat(model, messages, tools, functions, true)
	if err != nil {
		t.Fatal(err)
	}
	bound, err := (Counter{}).Chat(model, messages, tools, functions, false)
	if err != nil {
		t.Fatal(err)
	}
	if est < billed || bound < est {
		t.Errorf("%s: estimate %d, byte bound %d; want the estimate at least the %d billed and the bound at least the estimate", what, est, bound, billed)
	}
	return est
}

// TestChatToolsOfAnyShape: tools the cookbook does not describe (no
// parameters, parameters with no properties, another tool type, a list
// that is not one of objects) count at least as a function does, without
// an error: the API decides whether it takes them.
func TestChatToolsOfAnyShape(t *testing.T) {
	const msgs = `[{"role":"user","content":"Hi"}]`
	plain, err := (Counter{}).Chat("gpt-4o", json.RawMessage(msgs), nil, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, tools := range []string{
		`[{"type":"function","function":{"name":"now"}}]`,
		`[{"type":"function","function":{"name":"now","parameters":{"type":"object","properties":{}}}}]`,
		`[{"type":"custom","custom":{"name":"sql","description":"Run a query","format":{"type":"grammar","syntax":"lark","definition":"start: /.+/"}}}]`,
		`[{"type":"web_search"}]`,
		`["not an object"]`,
		`{"not":"a list"}`,
	} {
		got, err := (Counter{}).Chat("gpt-4o", json.RawMessage(msgs), json.RawMessage(tools), nil, true)
		if err != nil || got < plain+funcInitGPT4o+funcEnd {
			t.Errorf("Chat with tools %s = %d, %v; want at least %d", tools, got, err, plain+funcInitGPT4o+funcEnd)
		}
	}
}

// raw is s as JSON, nil for "".
func raw(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// postJSON posts body to url and reads the 200 answer into out.
func postJSON(t *testing.T, url string, body, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s %.200s = %d %s (%v)", url, b, resp.StatusCode, got, err)
	}
	if err := json.Unmarshal(got, out); err != nil {
		t.Fatalf("POST %s: %v: %s", url, err, strings.TrimSpace(string(got)))
	}
}

// TestToolsAreChatsCountOfDefinitions: a request's function definitions
// counted apart (Tools, which the pipeline counts once for the many lines
// that carry the same) and added to its messages' count are exactly
// Chat's count of the whole request, field by field, exactly and by the
// byte bound, so that counting them apart never changes an estimate.
func TestToolsAreChatsCountOfDefinitions(t *testing.T) {
	sets := toolSets(t)
	// A request may carry both.
	both := sets["support agent"]
	both.Functions = sets["support agent, functions"].Functions
	sets["support agent, tools and functions"] = both
	const messages = `[{"role":"user","content":"My parcel to Norway arrived damaged; can I get my money back?"}]`
	var c Counter
	for _, name := range slices.Sorted(maps.Keys(sets)) {
		set := sets[name]
		for _, model := range []string{"gpt-4o-mini", "gpt-4"} {
			for _, exact := range []bool{true, false} {
				whole, err := c.Chat(model, json.RawMessage(messages), set.Tools, set.Functions, exact)
				if err != nil {
					t.Fatal(err)
				}
				sum, err := c.Chat(model, json.RawMessage(messages), nil, nil, exact)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range [][2]json.RawMessage{{set.Tools, nil}, {nil, set.Functions}} {
					n, err := c.Tools(model, f[0], f[1], exact)
					if err != nil {
						t.Fatal(err)
					}
					sum += n
				}
				if sum != whole {
					t.Errorf("%s, %s, exact %v: Chat of the messages plus Tools of each field = %d, want Chat's %d", name, model, exact, sum, whole)
				}
			}
		}
	}
}

// toolSet is a request's function definitions: tools, the deprecated
// functions, or both.
type toolSet struct {
	Tools     json.RawMessage `json:"tools"`
	Functions json.RawMessage `json:"functions"`
}

// toolSets are the realistic tool sets of testdata/toolsets.json, by name.
func toolSets(t *testing.T) map[string]toolSet {
	t.Helper()
	data, err := os.ReadFile("testdata/toolsets.json")
	if err != nil {
		t.Fatal(err)
	}
	var sets map[string]toolSet
	if err := json.Unmarshal(data, &sets); err != nil {
		t.Fatal(err)
	}
	return sets
}
