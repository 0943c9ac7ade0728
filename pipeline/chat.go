package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/jsonl"
)

// chatEndpoint is the chat completions API, /v1/chat/completions.
var chatEndpoint = endpoint{
	what:    "chat completion",
	tiers:   true,
	resolve: (*item).resolveChat,
	call: func(ctx context.Context, c *openai.Client, model string) error {
		_, err := c.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: model})
		return err
	},
	body: newBody[chatCompletion],
	line: decodeLine[chatCompletion],
}

// isReasoningModel reports whether model takes max_completion_tokens and
// spends hidden reasoning tokens: the o-series and gpt-5, gpt-5.4 and the
// rest of the gpt-5.x family.
func isReasoningModel(model string) bool {
	for _, p := range []string{"o1", "o3", "o4", "gpt-5"} {
		if model == p || strings.HasPrefix(model, p+"-") || strings.HasPrefix(model, p+".") {
			return true
		}
	}
	return false
}

// resolveChat sets a chat-completions request's output cap and counts it.
func (it *item) resolveChat(body map[string]json.RawMessage, cfg *Config) error {
	// The o-series and gpt-5 refuse max_tokens; they take the same cap as
	// max_completion_tokens.
	reasoning := isReasoningModel(it.model)
	if raw, ok := body["max_tokens"]; ok && reasoning {
		if _, both := body["max_completion_tokens"]; !both {
			body["max_completion_tokens"] = raw
		}
		delete(body, "max_tokens")
	}
	capField := "max_tokens"
	if reasoning {
		capField = "max_completion_tokens"
	}
	maxOut := int64(0)
	for _, f := range []string{"max_completion_tokens", "max_tokens"} {
		n, err := positive(body, f)
		if err != nil {
			return err
		}
		if n > 0 && (maxOut == 0 || n < maxOut) {
			maxOut = n
		}
	}
	if maxOut == 0 {
		maxOut = outputCap(cfg, reasoning)
		body[capField] = mustJSON(maxOut)
	}
	choices := int64(1)
	if raw, ok := body["n"]; ok && string(raw) != "null" {
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || n <= 0 || n > 128 {
			return fmt.Errorf("n must be an integer from 1 to 128, not %.40s", raw)
		}
		choices = n
	}
	prompt, err := it.promptTokens(cfg, body["messages"], body, "tools", "functions")
	if err != nil {
		return err
	}
	it.prompt = prompt
	it.maxOut = maxOut * choices
	return nil
}

// promptTokens is a chat-formula count of a request of it.model (see
// tokens.Counter.Chat), messages and the function definitions of fields,
// the body's fields that carry them (tools; chat's functions). Jobs send
// the same definitions on thousands of lines, so each field's count is
// kept in the run's cache of line schemas, by its exact bytes, one a
// model and way of counting, as a line's own schema's is: the messages
// are counted each time, and the sum is Chat's count of the whole. It is
// here, with chat's resolve, because the chat formula is chat's: the
// Responses API's resolve counts its input by it too.
func (it *item) promptTokens(cfg *Config, messages json.RawMessage, body map[string]json.RawMessage, fields ...string) (int64, error) {
	n, err := cfg.Tokens.Chat(it.model, messages, nil, nil, it.exact)
	if err != nil {
		return 0, err
	}
	for _, f := range fields {
		raw := body[f]
		if !isSet(raw) {
			continue
		}
		tools, functions := raw, json.RawMessage(nil)
		if f == "functions" {
			tools, functions = nil, raw
		}
		c, err := cfg.schemas.cache().Tokens(f, raw, schemaCount{it.model, it.exact}, func() (int64, error) {
			return cfg.Tokens.Tools(it.model, tools, functions, it.exact)
		})
		if err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// chatCompletion is the part of a chat completion gptbatch keeps.
type chatCompletion struct {
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   struct {
		PromptTokens        int64 `json:"prompt_tokens"`
		CompletionTokens    int64 `json:"completion_tokens"`
		TotalTokens         int64 `json:"total_tokens"`
		PromptTokensDetails struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		CompletionTokensDetails struct {
			ReasoningTokens int64 `json:"reasoning_tokens"`
		} `json:"completion_tokens_details"`
	} `json:"usage"`
	ServiceTier string `json:"service_tier"`
}

// chatChoice is one of a chat completion's choices.
type chatChoice struct {
	Index   int `json:"index"`
	Message struct {
		Content   *string         `json:"content"`
		Refusal   *string         `json:"refusal"`
		ToolCalls json.RawMessage `json:"tool_calls"`
		// FunctionCall is the one call of an answer to the deprecated
		// functions (finish_reason "function_call"): its result has it
		// in tool_calls, as one call without an id (legacyCall).
		FunctionCall json.RawMessage `json:"function_call"`
	} `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

// legacyCall is an answer's function_call, the deprecated functions'
// answer, as the tool_calls a result has: one call of type function, with
// no id (the API gives it none).
func legacyCall(call json.RawMessage) json.RawMessage {
	b := make([]byte, 0, len(call)+32)
	b = append(b, `[{"type":"function","function":`...)
	b = append(b, call...)
	return append(b, "}]"...)
}

// errNoChoices is an answer with nothing in it.
var errNoChoices = errors.New("response has no choices")

// result reads a chat completion. The first choice is the content
// (JSON null with a refusal, left out when it is only tool calls); with
// n > 1 every choice's content is in choices, and logprobs, when asked
// for, are the choice's or, with n > 1, one a choice.
func (c *chatCompletion) result(it *item) (answer, error) {
	if len(c.Choices) == 0 {
		return answer{}, errNoChoices
	}
	slices.SortStableFunc(c.Choices, func(a, b chatChoice) int { return a.Index - b.Index })
	u := jsonl.Usage{
		PromptTokens:     c.Usage.PromptTokens,
		CompletionTokens: c.Usage.CompletionTokens,
		TotalTokens:      c.Usage.TotalTokens,
		CachedTokens:     c.Usage.PromptTokensDetails.CachedTokens,
		ReasoningTokens:  c.Usage.CompletionTokensDetails.ReasoningTokens,
	}
	res := &jsonl.Result{ID: it.req.ID, Line: it.req.Line, Model: c.Model, Attempts: it.attempts, Metadata: it.req.Metadata, Usage: &u}
	first := c.Choices[0]
	msg := first.Message
	toolCalls := msg.ToolCalls
	if !isSet(toolCalls) && isSet(msg.FunctionCall) {
		toolCalls = legacyCall(msg.FunctionCall)
	}
	hasTools := isSet(toolCalls) && string(toolCalls) != "[]"
	switch {
	case msg.Refusal != nil && *msg.Refusal != "":
		res.Content, res.Refusal = []byte("null"), msg.Refusal
	case msg.Content != nil:
		res.Content = jsonl.String(*msg.Content)
	case !hasTools:
		res.Content = []byte("null")
	}
	if hasTools {
		res.ToolCalls = toolCalls
	}
	res.FinishReason = first.FinishReason
	if len(c.Choices) > 1 {
		res.Choices = make([]*string, len(c.Choices))
		for i, ch := range c.Choices {
			if ch.Message.Refusal == nil || *ch.Message.Refusal == "" {
				res.Choices[i] = ch.Message.Content
			}
		}
	}
	var logprobs []json.RawMessage
	asked := false
	for _, ch := range c.Choices {
		asked = asked || isSet(ch.Logprobs)
		logprobs = append(logprobs, cmpRaw(ch.Logprobs))
	}
	switch {
	case !asked:
	case len(logprobs) == 1:
		res.Logprobs = logprobs[0]
	default:
		res.Logprobs = mustJSON(logprobs)
	}
	a := answer{results: []*jsonl.Result{res}, usage: u, model: c.Model, serviceTier: c.ServiceTier}
	if it.schema != nil {
		shapes := make([]choiceAnswer, len(c.Choices))
		for i, ch := range c.Choices {
			shapes[i] = choiceAnswer{content: ch.Message.Content, finishReason: ch.FinishReason}
			if ch.Message.Refusal != nil {
				shapes[i].refusal = *ch.Message.Refusal
			}
		}
		a.invalid = it.check(res, shapes)
	}
	return a, nil
}
