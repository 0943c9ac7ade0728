package pipeline

import "testing"

// The reasoning models take max_completion_tokens, gpt-5.x included.
func TestIsReasoningModel(t *testing.T) {
	for model, want := range map[string]bool{
		"gpt-5": true, "gpt-5-mini": true, "gpt-5.4": true, "gpt-5.4-2026-03-05": true, "gpt-5.6-luna": true,
		"o1": true, "o3-mini": true, "o4-mini-2025-04-16": true,
		"gpt-4o": false, "gpt-4.1": false, "gpt-50": false, "o10": false, "acme-1": false,
	} {
		if got := isReasoningModel(model); got != want {
			t.Errorf("isReasoningModel(%q) = %v, want %v", model, got, want)
		}
	}
}
