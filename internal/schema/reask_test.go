package schema

import (
	"errors"
	"strings"
	"testing"

	"github.com/gptbatch/gptbatch/jsonl"
)

func TestReask(t *testing.T) {
	mismatch := Verdict{Kind: Mismatch, Message: "at /age: got string, want integer"}
	answer := `{"name":"Ada","age":"36"}`
	assistant := `{"role":"assistant","content":"{\"name\":\"Ada\",\"age\":\"36\"}"}`
	user := `{"role":"user","content":"That answer is not valid: at /age: got string, want integer. Reply again with only the corrected JSON value, one that fits the schema."}`
	cutOff := `{"role":"user","content":"` + reaskTruncated + `"}`
	rf := `"response_format":{"type":"json_schema","json_schema":{"name":"output","schema":{"type":"object"},"strict":false}}`
	tests := []struct {
		name, endpoint, body string
		v                    Verdict
		want                 string
	}{
		{"chat: the answer and what was wrong follow the conversation", jsonl.EndpointChat,
			`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"<x>"}, {"role":"user","content":"Who?"} ],"temperature":0,` + rf + `}`, mismatch,
			`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"<x>"}, {"role":"user","content":"Who?"} ,` + assistant + `,` + user + `],"temperature":0,` + rf + `}`},
		{"chat: not JSON", jsonl.EndpointChat, `{"messages":[{"role":"user","content":"Who?"}]}`,
			Verdict{Kind: NotJSON, Message: "not JSON: the answer is empty"},
			`{"messages":[{"role":"user","content":"Who?"},{"role":"assistant","content":""},{"role":"user","content":"That answer is not valid: not JSON: the answer is empty. Reply again with only the corrected JSON value, one that fits the schema."}]}`},
		{"chat: cut off, without the cut-off text", jsonl.EndpointChat, `{"messages":[{"role":"user","content":"Who?"}],"max_tokens":5}`,
			Verdict{Kind: Truncated, Message: "cut off"},
			`{"messages":[{"role":"user","content":"Who?"},` + cutOff + `],"max_tokens":5}`},
		{"chat: refused, sent again as it was", jsonl.EndpointChat, `{"messages":[{"role":"user","content":"Who?"}]}`,
			Verdict{Kind: Refused, Message: "refused: no"},
			`{"messages":[{"role":"user","content":"Who?"}]}`},
		{"responses: a string input becomes a user message", jsonl.EndpointResponses, `{"input":"Who?","instructions":"Be brief.","store":false}`, mismatch,
			`{"input":[{"role":"user","content":"Who?"},` + assistant + `,` + user + `],"instructions":"Be brief.","store":false}`},
		{"responses: an input list is followed", jsonl.EndpointResponses, `{"input":[{"role":"user","content":[{"type":"input_text","text":"Who?"}]}]}`, mismatch,
			`{"input":[{"role":"user","content":[{"type":"input_text","text":"Who?"}]},` + assistant + `,` + user + `]}`},
		{"responses: no input", jsonl.EndpointResponses, `{"prompt":{"id":"pmpt_1"}}`, mismatch,
			`{"prompt":{"id":"pmpt_1"},"input":[` + assistant + `,` + user + `]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Reask(tt.endpoint, []byte(tt.body), answer, tt.v)
			if tt.v.Kind == NotJSON {
				got, err = Reask(tt.endpoint, []byte(tt.body), "", tt.v)
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Reask =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestReaskRefusesWhatIsNotAskedAgain(t *testing.T) {
	tests := []struct {
		name, endpoint, body string
		v                    Verdict
		wantErr              string
	}{
		{"a valid answer", jsonl.EndpointChat, `{"messages":[]}`, Verdict{Kind: Valid}, "a valid answer is not asked again"},
		{"a tool call", jsonl.EndpointChat, `{"messages":[]}`, Verdict{Kind: ToolCalls}, "a tool_calls answer is not asked again"},
		{"a chat body without messages", jsonl.EndpointChat, `{"model":"m"}`, Verdict{Kind: Mismatch}, "without messages"},
		{"messages that are not a list", jsonl.EndpointChat, `{"messages":"hi"}`, Verdict{Kind: Mismatch}, "messages: not a JSON array"},
		{"embeddings", jsonl.EndpointEmbeddings, `{"input":"x"}`, Verdict{Kind: Mismatch}, ErrNoSchemaField.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Reask(tt.endpoint, []byte(tt.body), "x", tt.v)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Reask error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if _, err := Reask(jsonl.EndpointEmbeddings, []byte(`{}`), "x", Verdict{Kind: Mismatch}); !errors.Is(err, ErrNoSchemaField) {
		t.Errorf("Reask(embeddings) error = %v, want ErrNoSchemaField", err)
	}
}
