package batchapi

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/retry"
	openai "github.com/sashabaranov/go-openai"
)

// TestTagged: after a create whose answer was lost, only the batch that
// very create made is taken for it: never the batch of the same file that
// an earlier create made and the API refused for the enqueued-token limit.
func TestTagged(t *testing.T) {
	meta := map[string]any{"gptbatch_run": "r1", "gptbatch_chunk": "3", "gptbatch_create": "2"}
	tags := func(create string) map[string]any {
		return map[string]any{"gptbatch_run": "r1", "gptbatch_chunk": "3", "gptbatch_create": create}
	}
	tests := []struct {
		name string
		bo   openai.Batch
		want bool
	}{
		{"made by this create", openai.Batch{InputFileID: "file-a", Metadata: tags("2")}, true},
		{"the refused one, made before", openai.Batch{InputFileID: "file-a", Metadata: tags("1")}, false},
		{"another file", openai.Batch{InputFileID: "file-b", Metadata: tags("2")}, false},
		{"another run", openai.Batch{InputFileID: "file-a", Metadata: map[string]any{"gptbatch_run": "r0", "gptbatch_chunk": "3", "gptbatch_create": "2"}}, false},
		{"untagged", openai.Batch{InputFileID: "file-a"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tagged(tt.bo, "file-a", meta); got != tt.want {
				t.Errorf("tagged(%v %v) = %v, want %v", tt.bo.InputFileID, tt.bo.Metadata, got, tt.want)
			}
		})
	}
}

// TestDownload: a download that breaks off goes on where it broke, so
// that its reader reads the file once through, every byte once and in
// order; one that breaks past its retries ends with the network's error
// after the bytes it read.
func TestDownload(t *testing.T) {
	var file strings.Builder
	for i := range 200 {
		fmt.Fprintf(&file, `{"custom_id":"line-%d","response":{"status_code":200}}`+"\n", i+1)
	}
	tests := []struct {
		name    string
		cuts    int // downloads broken off half way
		wantAll bool
	}{
		{"whole", 0, true},
		{"broken once", 1, true},
		{"broken at the same place as long as retries are left", 2, true},
		{"broken past the retries", 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api, srv, body := downloading(t, file.String(), tt.cuts)
			got, err := io.ReadAll(body)
			body.Close()
			if srv.Cut() != tt.cuts {
				t.Errorf("%d downloads cut, want %d", srv.Cut(), tt.cuts)
			}
			if tt.wantAll {
				if err != nil || string(got) != file.String() {
					t.Errorf("Download read %d bytes, error %v; want the file's %d, no error", len(got), err, file.Len())
				}
				return
			}
			if f := api.Failure(err); f.Type != "network" || len(got) == 0 || len(got) >= file.Len() || !strings.HasPrefix(file.String(), string(got)) {
				t.Errorf("Download read %d bytes, error %v (%s); want the file's first half of %d, a network failure", len(got), err, f.Type, file.Len())
			}
		})
	}
}

// TestDownloadBlocks: a file read in blocks is read in whole lines, every
// line once and in order; one whose download breaks past its retries ends
// after the whole lines before the break, and Err says it was the network.
func TestDownloadBlocks(t *testing.T) {
	var file strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&file, `{"custom_id":"line-%d","response":{"status_code":200}}`+"\n", i+1)
	}
	tests := []struct {
		name    string
		cuts    int
		wantAll bool
	}{
		{"whole", 0, true},
		{"broken once", 1, true},
		{"broken past the retries", 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api, _, body := downloading(t, file.String(), tt.cuts)
			defer body.Close()
			var got strings.Builder
			for {
				blocks, err := body.Blocks(context.Background(), 2)
				if err != nil {
					t.Fatalf("Blocks: %v", err)
				}
				if len(blocks) == 0 {
					break
				}
				for _, b := range blocks {
					if len(b) == 0 || b[len(b)-1] != '\n' {
						t.Fatalf("a block of %d bytes that does not end a line", len(b))
					}
					got.Write(b)
				}
			}
			if tt.wantAll {
				if body.Err() != nil || got.String() != file.String() {
					t.Errorf("Blocks read %d bytes, Err %v; want the file's %d, no error", got.Len(), body.Err(), file.Len())
				}
				return
			}
			if f := api.Failure(body.Err()); f.Type != "network" || got.Len() == 0 || got.Len() >= file.Len() || !strings.HasPrefix(file.String(), got.String()) {
				t.Errorf("Blocks read %d bytes, Err %v (%s); want whole lines of the file's first half of %d, a network failure", got.Len(), body.Err(), f.Type, file.Len())
			}
		})
	}
}

// downloading is a Download of a file of text uploaded to a fake API that
// breaks its next cuts downloads off half way, by a client with 2 retries.
func downloading(t *testing.T, text string, cuts int) (*Client, *openaitest.Server, *Stream) {
	t.Helper()
	srv := openaitest.New(openaitest.Config{})
	t.Cleanup(srv.Close)
	api := New(Config{BaseURL: srv.URL(), Key: "sk-test", Timeout: 5 * time.Second, Retry: retry.Policy{Retries: 2}, Clock: instantClock{time.Now()}})
	ctx := context.Background()
	in := filepath.Join(t.TempDir(), "out.jsonl")
	if err := os.WriteFile(in, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := api.Upload(ctx, in, "out.jsonl")
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	srv.CutDownloads(cuts, 0.5)
	body, err := api.Download(ctx, id)
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	return api, srv, body
}
