package openaitest

import (
	"strings"
	"testing"
)

// TestToolsBilledAsTheCookbookCounts: a request's function definitions,
// as tools, as the deprecated functions or as Responses API tools, are
// billed as prompt tokens: the cookbook's example as many as the API
// reported for it.
func TestToolsBilledAsTheCookbookCounts(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	for _, tt := range []struct {
		model string
		want  int // the API's prompt_tokens, as the cookbook shows them
	}{
		{"gpt-4o", 101}, {"gpt-4o-mini", 101}, {"gpt-4", 105}, {"gpt-3.5-turbo", 105},
	} {
		t.Run(tt.model, func(t *testing.T) {
			head := `{"model":"` + tt.model + `","messages":` + CookbookMessages
			for _, body := range []string{
				head + `,"tools":[{"type":"function","function":` + CookbookFunction + `}]}`,
				head + `,"functions":[` + CookbookFunction + `]}`,
				head + `,"functions":[` + CookbookFunction + `],"function_call":"auto"}`,
			} {
				if got := promptTokens(t, s, body); got != tt.want {
					t.Errorf("prompt_tokens(%.120s...) = %d, want %d", body, got, tt.want)
				}
			}
			plain := promptTokens(t, s, head+`}`)
			flat := `{"type":"function",` + strings.TrimPrefix(CookbookFunction, "{")
			r := postResponse(t, s, `{"model":"`+tt.model+`","input":`+CookbookMessages+`,"tools":[`+flat+`]}`)
			if r.Usage.InputTokens != tt.want {
				t.Errorf("responses input_tokens = %d, want %d (%d without the tool)", r.Usage.InputTokens, tt.want, plain)
			}
		})
	}
}

// TestToolsBilledDeep: the properties of nested objects and of arrays'
// items are billed as the first level's are; a function call in an
// assistant message is billed as a tool call is.
func TestToolsBilledDeep(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	tool := func(params string) string {
		return `{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":` + params + `}}]}`
	}
	flat := promptTokens(t, s, tool(`{"type":"object","properties":{"a":{"type":"string"}}}`))
	nested := promptTokens(t, s, tool(`{"type":"object","properties":{"a":{"type":"string"},"o":{"type":"object","properties":{"b":{"type":"string"}}}}}`))
	items := promptTokens(t, s, tool(`{"type":"object","properties":{"a":{"type":"string"},"o":{"type":"array","items":{"type":"object","properties":{"b":{"type":"string"}}}}}}`))
	enc, err := o200kEncoder()
	if err != nil {
		t.Fatal(err)
	}
	if want := flat + propKey + enc.count("o:object:") + propInit + propKey + enc.count("b:string:"); nested != want {
		t.Errorf("prompt_tokens with a nested object = %d, want %d", nested, want)
	}
	if want := flat + propKey + enc.count("o:array:") + propInit + propKey + enc.count("b:string:"); items != want {
		t.Errorf("prompt_tokens with an array of objects = %d, want %d", items, want)
	}

	call := func(m string) string {
		return `{"model":"gpt-4o","messages":[{"role":"user","content":"x"},` + m + `,{"role":"user","content":"y"}]}`
	}
	byTool := promptTokens(t, s, call(`{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}`))
	byFunction := promptTokens(t, s, call(`{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{\"a\":1}"}}`))
	if byFunction != byTool {
		t.Errorf("prompt_tokens with a function call = %d, want %d as with the tool call", byFunction, byTool)
	}
}

// TestFunctionsNeedNames: a function definition without a name is the
// API's 400, naming it.
func TestFunctionsNeedNames(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	r := post(t, s, "", `{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"functions":[{"name":"f"},{"description":"nameless"}]}`)
	if r.status != 400 || r.apiError(t).Error.Param == nil || *r.apiError(t).Error.Param != "functions[1].name" {
		t.Errorf("functions without a name = %d %s, want 400 naming functions[1].name", r.status, r.body)
	}
}
