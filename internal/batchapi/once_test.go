package batchapi

import (
	"testing"

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
