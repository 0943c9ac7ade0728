package openaitest

import (
	"context"
	"testing"

	openai "github.com/sashabaranov/go-openai"
)

// TestChoices: n choices that differ, logprobs when asked, refusals on
// request, each as the API sends them, read by go-openai.
func TestChoices(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	defer s.Close()
	cfg := openai.DefaultConfig("sk-test")
	cfg.BaseURL = s.URL()
	c := openai.NewClientWithConfig(cfg)
	tests := []struct {
		name     string
		prompt   string
		n        int
		logprobs bool
	}{
		{"three choices", "hello there", 3, false},
		{"logprobs", "hello there", 1, true},
		{"refusal", "how to __refusal__", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
				Model: "gpt-4o-mini", N: tt.n, LogProbs: tt.logprobs,
				Messages: []openai.ChatCompletionMessage{{Role: "user", Content: tt.prompt}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Choices) != tt.n {
				t.Fatalf("%d choices, want %d", len(resp.Choices), tt.n)
			}
			enc, _ := o200kEncoder()
			want := 0
			for i, ch := range resp.Choices {
				text := ChoiceText(tt.prompt, i)
				if tt.name == "refusal" {
					if ch.Message.Content != "" || ch.Message.Refusal != RefusalMessage {
						t.Errorf("choice %d: content %q refusal %q, want a refusal", i, ch.Message.Content, ch.Message.Refusal)
					}
					text = RefusalMessage
				} else if ch.Message.Content != text {
					t.Errorf("choice %d: content %q, want %q", i, ch.Message.Content, text)
				}
				want += len(enc.tk.EncodeOrdinary(text))
				if got := ch.LogProbs != nil; got != tt.logprobs {
					t.Errorf("choice %d: logprobs present %v, want %v", i, got, tt.logprobs)
				} else if tt.logprobs && len(ch.LogProbs.Content) != len(enc.tk.EncodeOrdinary(text)) {
					t.Errorf("choice %d: %d logprobs, want one a token", i, len(ch.LogProbs.Content))
				}
			}
			if resp.Usage.CompletionTokens != want {
				t.Errorf("completion_tokens = %d, want %d (every choice)", resp.Usage.CompletionTokens, want)
			}
		})
	}
}
