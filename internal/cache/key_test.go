package cache

import (
	"errors"
	"testing"
)

const (
	chat      = "/v1/chat/completions"
	responses = "/v1/responses"
	openai    = "https://api.openai.com/v1"
)

func mustKey(t *testing.T, endpoint, baseURL, body string) Key {
	t.Helper()
	k, err := KeyOf(endpoint, baseURL, []byte(body))
	if err != nil {
		t.Fatalf("KeyOf(%s, %s, %s): %v", endpoint, baseURL, body, err)
	}
	return k
}

// A request sent again, its fields in another order or spelt another way,
// is answered from the cache.
func TestKeySameRequestHits(t *testing.T) {
	t.Parallel()
	base := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Café?"}],"temperature":0.2,"response_format":{"type":"json_object"}}`
	for _, tc := range []struct{ name, endpoint, baseURL, body string }{
		{"keys reordered", chat, openai, `{"temperature":0.2,"response_format":{"type":"json_object"},"messages":[{"content":"Café?","role":"user"}],"model":"gpt-4o-mini"}`},
		{"whitespace", chat, openai, "{ \"model\" : \"gpt-4o-mini\",\n\"messages\":[ {\"role\":\"user\",\"content\":\"Café?\"} ],\t\"temperature\":0.2,\"response_format\":{\"type\":\"json_object\"}}"},
		{"escaped characters", chat, openai, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Caf\u00e9?"}],"temperature":0.2,"response_format":{"type":"json\u005fobject"}}`},
		{"base URL with a trailing slash", chat, openai + "/", base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := mustKey(t, tc.endpoint, tc.baseURL, tc.body), mustKey(t, chat, openai, base); got != want {
				t.Errorf("KeyOf(%s) = %v, want the key of %s, %v", tc.body, got, base, want)
			}
		})
	}
}

// A change to anything the API receives is another request: it misses.
func TestKeyChangedRequestMisses(t *testing.T) {
	t.Parallel()
	const chatBody = `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`
	const responsesBody = `{"model":"o4-mini","input":"Hi","reasoning":{"effort":"low"},"store":false,"max_output_tokens":4096}`
	base := map[string]Key{chat: mustKey(t, chat, openai, chatBody), responses: mustKey(t, responses, openai, responsesBody)}
	for _, tc := range []struct{ name, endpoint, baseURL, body string }{
		{"temperature", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":0.7,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`},
		{"reasoning_effort", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"high","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`},
		{"reasoning.effort", responses, openai, `{"model":"o4-mini","input":"Hi","reasoning":{"effort":"high"},"store":false,"max_output_tokens":4096}`},
		{"response_format", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"json_object"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`},
		{"tools", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"g","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`},
		{"seed", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":8,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`},
		{"n", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":2,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`},
		{"logprobs", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":true,"service_tier":"default","max_completion_tokens":4096}`},
		{"service_tier", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"flex","max_completion_tokens":4096}`},
		{"model", chat, openai, `{"model":"o3","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`},
		{"a field added", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096,"top_p":0.5}`},
		{"a number written another way", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"}],"temperature":1.0,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`},
		{"messages reordered", chat, openai, `{"model":"o4-mini","messages":[{"role":"user","content":"Hi"},{"role":"user","content":"Hi"}],"temperature":1,"reasoning_effort":"low","response_format":{"type":"text"},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"seed":7,"n":1,"logprobs":false,"service_tier":"default","max_completion_tokens":4096}`},
		{"another base URL", chat, "http://127.0.0.1:8080/v1", chatBody},
		{"another endpoint", "/v1/embeddings", openai, chatBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mustKey(t, tc.endpoint, tc.baseURL, tc.body); got == base[tc.endpoint] {
				t.Errorf("KeyOf(%s, %s) = %v, the key of the request before the change", tc.baseURL, tc.body, got)
			}
		})
	}
}

// A key names the same request in every gptbatch that reads this cache
// format: the canonical form, the hash and what it covers are pinned, so
// that a change to any of them comes with a new keyVersion. The value was
// computed apart, with Python's hashlib over the fields as KeyOf lays them.
func TestKeyIsStable(t *testing.T) {
	t.Parallel()
	got := mustKey(t, chat, openai, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Caf\u00e9 <b>\n"}],"temperature":0}`)
	const want = "be13ab3bec9b911a82ba2bf655290a3727af4b0f4c398a28ea43910c8d2bc857"
	if got.String() != want {
		t.Errorf("KeyOf(...) = %s, want %s", got, want)
	}
}

func TestKeyRefusesWhatIsNotJSON(t *testing.T) {
	t.Parallel()
	if _, err := KeyOf(chat, openai, []byte(`{"model":`)); !errors.Is(err, ErrNotCacheable) {
		t.Errorf("KeyOf(a cut body) = %v, want ErrNotCacheable", err)
	}
}
