package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	gojson "github.com/goccy/go-json"
	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/jsonl"
)

// responsesEndpoint is the Responses API, /v1/responses.
var responsesEndpoint = endpoint{
	what:    "response",
	tiers:   true,
	resolve: (*item).resolveResponses,
	call: func(ctx context.Context, c *openai.Client, model string) error {
		_, err := c.CreateResponse(ctx, openai.CreateResponseRequest{Model: model})
		return err
	},
	body: newBody[response],
	line: decodeLine[response],
}

// resolveResponses sets a Responses API request's output cap and store,
// and counts its input by the chat formula on the messages it amounts to.
func (it *item) resolveResponses(body map[string]json.RawMessage, cfg *Config) error {
	maxOut, err := positive(body, "max_output_tokens")
	if err != nil {
		return err
	}
	// A chat habit: the Responses API refuses max_tokens and
	// max_completion_tokens, and takes the same cap as max_output_tokens.
	for _, f := range []string{"max_completion_tokens", "max_tokens"} {
		n, err := positive(body, f)
		if err != nil {
			return err
		}
		delete(body, f)
		if maxOut == 0 && n > 0 {
			maxOut = n
			body["max_output_tokens"] = mustJSON(n)
		}
	}
	if maxOut == 0 {
		maxOut = outputCap(cfg, isReasoningModel(it.model))
		body["max_output_tokens"] = mustJSON(maxOut)
	}
	// A stored conversation the line continues is billed as input, and
	// only the API knows its size.
	for _, f := range []string{"previous_response_id", "conversation"} {
		if isSet(body[f]) {
			it.unbounded = f
		}
	}
	if _, ok := body["store"]; !ok {
		// A filter should not leave its answers stored at OpenAI.
		body["store"] = json.RawMessage("false")
	}
	msgs, err := responsesMessages(body["instructions"], body["input"])
	if err != nil {
		return err
	}
	prompt, err := it.promptTokens(cfg, msgs, body, "tools")
	if err != nil {
		return err
	}
	it.prompt, it.maxOut = prompt, maxOut
	return nil
}

// responsesMessages are the chat messages a Responses API request's
// instructions and input amount to, for counting: the instructions as a
// system message, a string input as a user message, message items as
// messages, a function call as an assistant's tool call and its output as
// a tool message. Other items count as their JSON text, which errs high.
func responsesMessages(instructions, input json.RawMessage) (json.RawMessage, error) {
	var msgs []map[string]any
	if len(instructions) > 0 && string(instructions) != "null" {
		var s string
		if err := json.Unmarshal(instructions, &s); err != nil {
			return nil, fmt.Errorf("instructions must be a string")
		}
		if s != "" {
			msgs = append(msgs, map[string]any{"role": "system", "content": s})
		}
	}
	var one string
	if err := json.Unmarshal(input, &one); err == nil {
		msgs = append(msgs, map[string]any{"role": "user", "content": one})
		return json.Marshal(msgs)
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(input, &items); err != nil {
		return nil, fmt.Errorf("input must be a string or an array of input items")
	}
	for i, item := range items {
		var typ, role string
		json.Unmarshal(item["type"], &typ)  //nolint:errcheck // "" is a message
		json.Unmarshal(item["role"], &role) //nolint:errcheck // checked below
		switch typ {
		case "", "message":
			if role == "" {
				return nil, fmt.Errorf("input[%d] has no \"role\"", i)
			}
			msgs = append(msgs, map[string]any{"role": role, "content": item["content"]})
		case "function_call":
			call := map[string]json.RawMessage{"name": item["name"], "arguments": item["arguments"]}
			msgs = append(msgs, map[string]any{"role": "assistant", "tool_calls": []any{call}})
		case "function_call_output":
			msgs = append(msgs, map[string]any{"role": "tool", "content": string(item["output"])})
		default:
			b, _ := json.Marshal(item) // it was just decoded
			msgs = append(msgs, map[string]any{"role": "user", "content": string(b)})
		}
	}
	return json.Marshal(msgs)
}

// response is the part of a Responses API response gptbatch keeps.
type response struct {
	Model  string `json:"model"`
	Status string `json:"status"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Output []json.RawMessage `json:"output"`
	Usage  struct {
		InputTokens        int64 `json:"input_tokens"`
		InputTokensDetails struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		OutputTokens        int64 `json:"output_tokens"`
		OutputTokensDetails struct {
			ReasoningTokens int64 `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
		TotalTokens int64 `json:"total_tokens"`
	} `json:"usage"`
	ServiceTier string `json:"service_tier"`
}

// outputItem is the part of a response's output item gptbatch reads.
type outputItem struct {
	Type    string `json:"type"`
	Content []struct {
		Type     string          `json:"type"`
		Text     string          `json:"text"`
		Refusal  string          `json:"refusal"`
		Logprobs json.RawMessage `json:"logprobs"`
	} `json:"content"`
}

// result reads a Responses API response: content is the concatenated
// output_text, a refusal is refusal with content null, function calls
// are tool_calls, and usage maps input and output tokens to prompt and
// completion tokens.
func (r *response) result(it *item) (answer, error) {
	if r.Status == "failed" {
		msg := "response failed"
		if r.Error != nil {
			msg = fmt.Sprintf("response failed: %s: %s", r.Error.Code, r.Error.Message)
		}
		return answer{}, errors.New(msg)
	}
	u := jsonl.Usage{
		PromptTokens:     r.Usage.InputTokens,
		CompletionTokens: r.Usage.OutputTokens,
		TotalTokens:      r.Usage.TotalTokens,
		CachedTokens:     r.Usage.InputTokensDetails.CachedTokens,
		ReasoningTokens:  r.Usage.OutputTokensDetails.ReasoningTokens,
	}
	res := &jsonl.Result{ID: it.req.ID, Line: it.req.Line, Model: r.Model, Attempts: it.attempts, Metadata: it.req.Metadata, Usage: &u}
	var text, refusal bytes.Buffer
	var calls, logprobs []json.RawMessage
	hasText := false
	for _, raw := range r.Output {
		var o outputItem
		if err := gojson.Unmarshal(raw, &o); err != nil {
			return answer{}, fmt.Errorf("read response output: %w", err)
		}
		switch o.Type {
		case "message":
			for _, c := range o.Content {
				switch c.Type {
				case "output_text":
					hasText = true
					text.WriteString(c.Text)
					var lp []json.RawMessage
					if json.Unmarshal(c.Logprobs, &lp) == nil {
						logprobs = append(logprobs, lp...)
					}
				case "refusal":
					refusal.WriteString(c.Refusal)
				}
			}
		case "function_call", "custom_tool_call":
			calls = append(calls, raw)
		}
	}
	switch {
	case refusal.Len() > 0 && !hasText:
		s := refusal.String()
		res.Content, res.Refusal = []byte("null"), &s
	case hasText || len(calls) == 0:
		res.Content = jsonl.String(text.String())
	}
	if len(calls) > 0 {
		res.ToolCalls = mustJSON(calls)
	}
	if len(logprobs) > 0 {
		res.Logprobs = mustJSON(logprobs)
	}
	switch {
	case r.Status == "incomplete" && r.IncompleteDetails != nil && r.IncompleteDetails.Reason == "max_output_tokens":
		res.FinishReason = "length"
	case r.Status == "incomplete" && r.IncompleteDetails != nil:
		res.FinishReason = r.IncompleteDetails.Reason
	case len(calls) > 0:
		res.FinishReason = "tool_calls"
	default:
		res.FinishReason = "stop"
	}
	a := answer{results: []*jsonl.Result{res}, usage: u, model: r.Model, serviceTier: r.ServiceTier}
	if it.schema != nil {
		shape := choiceAnswer{finishReason: res.FinishReason}
		if res.Refusal != nil {
			shape.refusal = *res.Refusal
		} else if hasText || len(calls) == 0 {
			s := text.String()
			shape.content = &s
		}
		a.invalid = it.check(res, []choiceAnswer{shape})
	}
	return a, nil
}

// unbounded says once that lines continuing a stored conversation are
// estimated without it, and refuses such a line where a limit must bound
// the batch before anything is sent (--max-cost, --batch-tokens), as a
// line of unknown price is refused under a dollar limit.
func (r *runner) unbounded(it *item) {
	if r.unboundSaid.CompareAndSwap(false, true) {
		r.cfg.Log.Warn(fmt.Sprintf("responses lines with %s are estimated without the stored conversation they continue, which the API bills as input: their estimates are a lower bound", it.unbounded))
	}
	var limits []string
	if r.cfg.MaxCost > 0 {
		limits = append(limits, "--max-cost")
	}
	if r.cfg.BatchTokens > 0 {
		limits = append(limits, "--batch-tokens")
	}
	if len(limits) == 0 {
		return
	}
	it.result = errorResult(it.req, jsonl.ErrBudget, fmt.Sprintf(
		"line %d: not sent: it continues a stored conversation (%s) whose tokens gptbatch cannot count, so %s cannot bound it; to send it, run without them (--batch-tokens 0)",
		it.req.Line, it.unbounded, strings.Join(limits, " and ")), 0)
}
