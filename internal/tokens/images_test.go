package tokens

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image/png"
	"testing"
)

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// dataURL is a PNG of w×h as a data: URL.
func dataURL(t *testing.T, w, h int) string {
	t.Helper()
	// A PNG's signature and its header chunk: all that sizing an image
	// reads. Encoding whole images of 4096x8192 took most of this
	// package's test time under the race detector.
	ihdr := binary.BigEndian.AppendUint32([]byte("IHDR"), uint32(w))
	ihdr = binary.BigEndian.AppendUint32(ihdr, uint32(h))
	ihdr = append(ihdr, 8, 0, 0, 0, 0) // 8-bit gray, no interlace
	b := append([]byte("\x89PNG\r\n\x1a\n"), 0, 0, 0, 13)
	b = append(b, ihdr...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(ihdr))
	if cfg, err := png.DecodeConfig(bytes.NewReader(b)); err != nil || cfg.Width != w || cfg.Height != h {
		t.Fatalf("a %dx%d PNG header reads as %dx%d: %v", w, h, cfg.Width, cfg.Height, err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b)
}

// Image tokens by OpenAI's published formulas and worked examples; an
// image of unknown size is the most its detail level can cost.
func TestImageTokens(t *testing.T) {
	chat := func(url, detail string) contentPart {
		return contentPart{Type: "image_url", ImageURL: mustJSON(map[string]string{"url": url, "detail": detail})}
	}
	resp := func(url, detail string) contentPart {
		return contentPart{Type: "input_image", ImageURL: mustJSON(url), Detail: detail}
	}
	const web = "https://example.com/cat.jpg"
	for _, tt := range []struct {
		name  string
		model string
		part  contentPart
		want  int64
	}{
		{"gpt-4o 1024x1024 high", "gpt-4o", chat(dataURL(t, 1024, 1024), "high"), 85 + 4*170},
		{"gpt-4o 2048x4096 high (the docs' example)", "gpt-4o", chat(dataURL(t, 2048, 4096), "high"), 1105},
		{"gpt-4o 4096x8192 low", "gpt-4o", chat(dataURL(t, 4096, 8192), "low"), 85},
		{"gpt-4o small auto", "gpt-4o", chat(dataURL(t, 300, 200), ""), 85 + 170},
		{"gpt-4o-mini 1024x1024", "gpt-4o-mini", resp(dataURL(t, 1024, 1024), "auto"), 2833 + 4*5667},
		{"gpt-4o-mini url high: 8 tiles", "gpt-4o-mini", chat(web, "high"), 2833 + 8*5667},
		{"gpt-4o-mini url low", "gpt-4o-mini", chat(web, "low"), 2833},
		{"gpt-4o url auto: 8 tiles", "gpt-4o-2024-08-06", resp(web, ""), 85 + 8*170},
		{"gpt-5 url", "gpt-5", chat(web, "high"), 70 + 8*140},
		{"o3 low", "o3", chat(web, "low"), 75},
		{"gpt-4.1-mini 1024x1024: 1024 patches x 1.62", "gpt-4.1-mini", chat(dataURL(t, 1024, 1024), "high"), 1659},
		{"gpt-4.1-nano 1800x2400 (the docs' example, 1452 patches)", "gpt-4.1-nano", chat(dataURL(t, 1800, 2400), ""), 3572},
		{"o4-mini url: 1536 patches", "o4-mini", chat(web, "low"), 2642},
		{"unknown model url: as gpt-4o", "my-local-model", chat(web, "high"), 85 + 8*170},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.part.imageTokens(tt.model); got != tt.want {
				t.Errorf("imageTokens(%s) = %d, want %d", tt.model, got, tt.want)
			}
		})
	}
	if n := patchCount(1800, 2400); n != 1452 {
		t.Errorf("patchCount(1800, 2400) = %d, want 1452", n)
	}
}
