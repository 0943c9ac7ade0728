package tokens

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestEncodingName(t *testing.T) {
	tests := []struct{ model, want string }{
		{"gpt-4o-mini", o200kBase},
		{"gpt-4o-2024-08-06", o200kBase},
		{"gpt-4.1-nano", o200kBase},
		{"o3", o200kBase},
		{"o4-mini-2025-04-16", o200kBase},
		{"gpt-5-mini", o200kBase},
		{"some-local-llama", o200kBase},
		{"gpt-4", cl100kBase},
		{"gpt-4-turbo-2024-04-09", cl100kBase},
		{"gpt-3.5-turbo-0125", cl100kBase},
		{"ft:gpt-3.5-turbo-0125:acme::abc123", cl100kBase},
	}
	for _, tt := range tests {
		if got := encodingName(tt.model); got != tt.want {
			t.Errorf("encodingName(%q) = %q, want %q", tt.model, got, tt.want)
		}
	}
}

// The expected counts are what the API reports as prompt_tokens for these
// requests (the cookbook's worked examples and hand-checked ones).
func TestChat(t *testing.T) {
	tests := []struct {
		name, model, messages string
		want                  int64
	}{
		{"hello", "gpt-4o-mini", `[{"role":"user","content":"Hello world"}]`, 9},
		{"hello cl100k", "gpt-3.5-turbo", `[{"role":"user","content":"Hello world"}]`, 9},
		{"system and user", "gpt-4o-mini", `[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hi"}]`, 3 + (3 + 1 + 6) + (3 + 1 + 1)},
		{"name", "gpt-4o", `[{"role":"user","name":"bob","content":"Hi"}]`, 3 + 3 + 1 + 1 + 1 + 1},
		{"parts", "gpt-4o", `[{"role":"user","content":[{"type":"text","text":"Hello world"}]}]`, 9},
		{"image", "gpt-4o", `[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]`, 3 + 3 + 1 + 85 + 8*170},
		{"null content", "gpt-4o", `[{"role":"assistant","content":null}]`, 3 + 3 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := (Counter{}).Chat(tt.model, json.RawMessage(tt.messages), nil, nil, true)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Chat(%s) = %d, want %d", tt.messages, got, tt.want)
			}
		})
	}
}

func TestChatBadContent(t *testing.T) {
	if _, err := (Counter{}).Chat("gpt-4o", json.RawMessage(`[{"role":"user","content":42}]`), nil, nil, true); err == nil {
		t.Error("Chat with numeric content: no error")
	}
}

func BenchmarkTokenize(b *testing.B) {
	text := []byte{}
	for len(text) < 1<<20 {
		text = append(text, "The quick brown fox jumps over the lazy dog; naïve café — 12345 tokens, émoji 🙂.\n"...)
	}
	msgs, _ := json.Marshal([]map[string]string{{"role": "user", "content": string(text)}})
	for _, enc := range []struct{ name, model string }{{o200kBase, "gpt-4o-mini"}, {cl100kBase, "gpt-4"}} {
		b.Run(enc.name, func(b *testing.B) {
			if _, err := (Counter{}).Chat(enc.model, msgs, nil, nil, true); err != nil { // build the encoder outside the timing
				b.Fatal(err)
			}
			b.SetBytes(int64(len(text)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := (Counter{}).Chat(enc.model, msgs, nil, nil, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The byte bound (Chat not exact), used while the encoder is built, must never be below the
// exact count, or the first requests could overrun a limit.
func TestChatBound(t *testing.T) {
	for _, m := range []string{
		`[{"role":"user","content":"Hello world"}]`,
		`[{"role":"system","content":"naïve café — 🙂 emoji"},{"role":"user","name":"bob","content":[{"type":"text","text":"x"}]}]`,
		`[{"role":"user","content":"` + strings.Repeat("a", 5000) + `"}]`,
	} {
		exact, err := (Counter{}).Chat("gpt-4o", json.RawMessage(m), nil, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		bound, err := (Counter{}).Chat("gpt-4o", json.RawMessage(m), nil, nil, false)
		if err != nil || bound < exact {
			t.Errorf("Chat(%.40s, bound) = %d, %v; want >= %d", m, bound, err, exact)
		}
	}
}

// chunkTexts are texts whose pre-tokens are easy to get wrong: long
// whitespace runs, CJK, emoji, combining marks, contractions, digits,
// code, newlines before a slash.
func chunkTexts(t *testing.T) map[string]string {
	t.Helper()
	code, err := os.ReadFile("tokens.go")
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"prose":       strings.Repeat("The quick brown fox jumps over the lazy dog. It's THEY'RE we'll I'D. ", 40),
		"code":        string(code),
		"whitespace":  "a" + strings.Repeat(" ", 300) + "b\t\t\t\n\n\n   \n" + strings.Repeat("\u3000", 50) + "c" + strings.Repeat(" \n", 100) + "d   ",
		"cjk":         strings.Repeat("日本語のテキストです。中文文本，还有한국어 텍스트도 있습니다。", 30),
		"emoji":       strings.Repeat("hi 😀👍🏽 family 👨‍👩‍👧‍👦! ok✅", 30),
		"marks":       strings.Repeat("cafe\u0301 nai\u0308ve हिन्दी العَرَبِيَّة ", 30),
		"digits":      strings.Repeat("1234567 89a0 3.14159 x1y22z333 ٣٤٥ ", 30),
		"slash":       strings.Repeat("end.\n/usr/bin\n//c\r\n/x abc\n/", 30),
		"mixed case":  strings.Repeat("camelCaseWord HTTPServer iOS McDonald's ABCdef abcDEF ", 30),
		"punctuation": strings.Repeat("a,b;c...d!!!?? (e) [f] {g} \"h\" 'i' --j-- ", 30),
	}
}

// Counting in chunks gives exactly the count of the whole text, for both
// encodings, whatever the chunk size.
func TestCountTokensChunked(t *testing.T) {
	texts := chunkTexts(t)
	// Random texts of the troublesome pieces, seeded so that a failure
	// can be reproduced.
	pieces := []string{"a", "B", "é", "\u0301", "'s", "'", "’", "1", "23", "٣", " ", "  ", "\n", "\r\n", "\t", ".", "/", "中", "😀", "\u00a0", "\u3000", "Ab", "x'RE", "-"}
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		var b strings.Builder
		for range 200 {
			b.WriteString(pieces[rnd.IntN(len(pieces))])
		}
		texts["random "+strconv.Itoa(i)] = b.String()
	}
	for _, name := range []string{o200kBase, cl100kBase} {
		enc, err := encoders[name]()
		if err != nil {
			t.Fatal(err)
		}
		for tn, text := range texts {
			want := int64(len(enc.EncodeOrdinary(text)))
			for _, size := range []int{1, 2, 3, 7, 16, 100, 1000} {
				if got := countTokens(enc, text, size); got != want {
					t.Errorf("%s: countTokens(%s, chunks of %d) = %d, want %d (the whole text's count)", name, tn, size, got, want)
				}
			}
		}
	}
}

// Chunks are cut only at boundaries, and the cuts do come: a text of
// words is cut near every chunk size.
func TestNextBoundary(t *testing.T) {
	for _, tt := range []struct {
		s    string
		size int
		want int
	}{
		{"hello world", 3, 5},    // after the word
		{"hello world", 100, 11}, // shorter than a chunk
		{"abc123def", 1, 3},      // letter to digit
		{"123abc", 1, 3},         // digit to letter
		{"it's ok", 1, 4},        // not before the apostrophe
		{"e\u0301 x", 1, 5},      // not before a combining mark, nor after one
		{"日本語", 1, 9},            // no boundary in a run of letters
		{"   x", 1, 4},           // none in whitespace
	} {
		if got := nextBoundary(tt.s, tt.size); got != tt.want {
			t.Errorf("nextBoundary(%q, %d) = %d, want %d", tt.s, tt.size, got, tt.want)
		}
	}
}

// hugeText is a message of about n bytes, words and lines as prose has.
func hugeText(n int) string {
	line := "The quick brown fox jumps over the lazy dog, 12345 times; it's 日本語 too.\n"
	return strings.Repeat(line, n/len(line)+1)[:n]
}

// BenchmarkCountHuge counts one 20 MB message whole (as before chunking)
// and in chunks, reporting the bytes allocated per count; the peak RSS of
// either is measured with
//
//	go test -c -o /tmp/tokens.test ./internal/tokens
//	/usr/bin/time -v /tmp/tokens.test -test.run '^$' -test.bench 'CountHuge/chunked' -test.benchtime 1x
func BenchmarkCountHuge(b *testing.B) {
	enc, err := encoders[o200kBase]()
	if err != nil {
		b.Fatal(err)
	}
	text := hugeText(20 << 20)
	for _, bb := range []struct {
		name  string
		count func(string) int64
	}{
		{"whole", func(s string) int64 { return int64(len(enc.EncodeOrdinary(s))) }},
		{"chunked", func(s string) int64 { return countTokens(enc, s, tokenChunk) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				bb.count(text)
			}
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/(1<<20), "MiB-alloc/op")
		})
	}
}
