package openaitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestEncoderRemembersWhatTiktokenSays: the encoder's memory answers what
// tiktoken answers, for the tokens of texts and the billed tokens of
// schemas: those seen before, those forgotten when its memory was full,
// and those asked for from many goroutines at once.
func TestEncoderRemembersWhatTiktokenSays(t *testing.T) {
	t.Parallel()
	texts := []string{
		"", " ", "answer: hello there", "Hello world", "héllo wörld ✓ 日本語のテキスト",
		"answer 2: line 7\n\nwith  blanks\t", `{"name":"Ada","age":36}`,
		strings.Repeat("The quick brown fox jumps over the lazy dog. ", 30),
	}
	for i := range 40 {
		texts = append(texts, fmt.Sprintf("answer: prompt %d of the batch, item %d", i, i*i))
	}
	schemas := []json.RawMessage{
		json.RawMessage(extraction),
		json.RawMessage(`{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}`),
		json.RawMessage(`{"type":"array","items":{"$ref":"#/$defs/x"},"$defs":{"x":{"type":"integer"}}}`),
	}
	for _, build := range []func() (*encoder, error){o200kEncoder, cl100kEncoder} {
		base, err := build()
		if err != nil {
			t.Fatal(err)
		}
		// A memory of 600 bytes forgets everything many times over.
		e := newEncoder(base.tk, 600)
		var wg sync.WaitGroup
		errs := make(chan string, 4*2*(len(texts)+len(schemas))) // every goroutine, try, text and schema
		for range 4 {
			wg.Go(func() {
				for _, s := range texts {
					want := e.tk.EncodeOrdinary(s)
					for range 2 {
						if got := e.tokens(s); !slices.Equal(got, want) {
							errs <- fmt.Sprintf("tokens(%.40q) = %v, want %v", s, got, want)
						}
					}
				}
				for _, sch := range schemas {
					var billed bytes.Buffer
					writeBilled(&billed, sch)
					want := len(e.tk.EncodeOrdinary(billed.String())) + 9
					for range 2 {
						if got := formatTokens(e, sch); got != want {
							errs <- fmt.Sprintf("formatTokens(%.40s) = %d, want %d", sch, got, want)
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Error(msg)
		}
		if e.texts.held > e.texts.limit {
			t.Errorf("the memory holds %d bytes, want at most %d", e.texts.held, e.texts.limit)
		}
	}
}

// TestEncodingOfModels: the fake bills each model in the encoding the API
// bills it in; a fine-tuned model in its base model's.
func TestEncodingOfModels(t *testing.T) {
	for _, tt := range []struct{ model, want string }{
		{"gpt-4o-mini", o200kBase}, {"gpt-4.1", o200kBase}, {"o3-mini", o200kBase}, {"gpt-5", o200kBase},
		{"gpt-4", cl100kBase}, {"gpt-4-turbo", cl100kBase}, {"gpt-3.5-turbo", cl100kBase},
		{"ft:gpt-3.5-turbo-0125:acme::abc123", cl100kBase}, {"ft:gpt-4o-mini-2024-07-18:acme::x1", o200kBase},
	} {
		if got := encodingFor(tt.model); got != tt.want {
			t.Errorf("encodingFor(%q) = %s, want %s", tt.model, got, tt.want)
		}
	}
}
