package tokens

import (
	"encoding/base64"
	"encoding/json"
	"image"
	_ "image/gif" // DecodeConfig reads the sizes of GIF data URLs
	_ "image/jpeg"
	_ "image/png"
	"math"
	"strings"
)

// Image inputs are billed as tokens, by OpenAI's published formulas
// ("Images and vision", Calculating costs), which depend on the model,
// the detail level and the image's size:
//
//   - tile models (gpt-4o, gpt-4o-mini, gpt-4.1, gpt-5, o1, o3, ...): a
//     low-detail image costs the model's base tokens; a high-detail one
//     is scaled to fit 2048×2048, then so that its short side is at most
//     768 px, and costs base + tile tokens for each 512 px tile;
//   - patch models (gpt-4.1-mini, gpt-4.1-nano, gpt-5-mini, gpt-5-nano,
//     o4-mini): one token per 32 px patch, at most 1536 patches (larger
//     images are scaled down to fit), times the model's multiplier.
//
// gptbatch fetches nothing: an image given by URL has no known size, so
// its estimate is the most that detail level can cost (8 tiles at high
// detail, 1536 patches), an upper bound like every reservation. A data:
// URL (PNG, JPEG or GIF) is measured from its header and counted exactly.

// imageCost is how a model bills images.
type imageCost struct {
	base, tile int64   // tile models
	patchMul   float64 // patch models: tokens per patch; 0 for a tile model
}

// imageCostOf is the image pricing of model. Unknown models are billed as
// gpt-4o, the most common table.
func imageCostOf(model string) imageCost {
	has := func(prefixes ...string) bool {
		for _, p := range prefixes {
			if model == p || strings.HasPrefix(model, p+"-") {
				return true
			}
		}
		return false
	}
	switch {
	case has("gpt-4.1-mini", "gpt-5-mini"):
		return imageCost{patchMul: 1.62}
	case has("gpt-4.1-nano", "gpt-5-nano"):
		return imageCost{patchMul: 2.46}
	case has("o4-mini"):
		return imageCost{patchMul: 1.72}
	case has("gpt-4o-mini"):
		return imageCost{base: 2833, tile: 5667}
	case has("gpt-5", "gpt-5-chat-latest"):
		return imageCost{base: 70, tile: 140}
	case has("o1", "o1-pro", "o3"):
		return imageCost{base: 75, tile: 150}
	case has("computer-use-preview"):
		return imageCost{base: 65, tile: 129}
	}
	return imageCost{base: 85, tile: 170}
}

// Bounds of the formulas: a high-detail image has at most 8 tiles (4 along
// 2048 px by 2 along 768 px); a patch model counts at most 1536 patches.
const (
	maxTiles   = 8
	maxPatches = 1536
)

// imageTokens is what one image part costs model: exactly for a data: URL
// whose size it can read, else the most its detail level can cost.
func (p contentPart) imageTokens(model string) int64 {
	url, detail := p.imageURL()
	c := imageCostOf(model)
	w, h, known := imageSize(url)
	if c.patchMul > 0 {
		patches := maxPatches
		if known {
			patches = patchCount(w, h)
		}
		return int64(math.Ceil(float64(patches) * c.patchMul))
	}
	if detail == "low" {
		return c.base
	}
	tiles := int64(maxTiles)
	if known {
		tiles = tileCount(w, h)
	}
	return c.base + tiles*c.tile
}

// imageURL is the part's URL and detail: chat's {"url", "detail"} object
// or the Responses API's string and "detail" beside it.
func (p contentPart) imageURL() (url, detail string) {
	var obj struct {
		URL    string `json:"url"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(p.ImageURL, &obj) == nil && obj.URL != "" {
		return obj.URL, obj.Detail
	}
	json.Unmarshal(p.ImageURL, &url) //nolint:errcheck // no URL: the size is unknown
	return url, p.Detail
}

// imageSize reads the width and height of a base64 data: URL's image from
// its header, without decoding the image.
func imageSize(url string) (w, h int, ok bool) {
	rest, isData := strings.CutPrefix(url, "data:")
	if !isData {
		return 0, 0, false
	}
	meta, data, found := strings.Cut(rest, ",")
	if !found || !strings.HasSuffix(meta, ";base64") {
		return 0, 0, false
	}
	cfg, _, err := image.DecodeConfig(base64.NewDecoder(base64.StdEncoding, strings.NewReader(data)))
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
		return 0, 0, false
	}
	return cfg.Width, cfg.Height, true
}

// tileCount is the 512 px tiles of a w×h image at high detail.
func tileCount(w, h int) int64 {
	fw, fh := float64(w), float64(h)
	if m := max(fw, fh); m > 2048 {
		fw, fh = fw*2048/m, fh*2048/m
	}
	if m := min(fw, fh); m > 768 {
		fw, fh = fw*768/m, fh*768/m
	}
	return int64(math.Ceil(fw/512) * math.Ceil(fh/512))
}

// patchCount is the 32 px patches of a w×h image for a patch model.
func patchCount(w, h int) int {
	fw, fh := float64(w), float64(h)
	if math.Ceil(fw/32)*math.Ceil(fh/32) > maxPatches {
		r := math.Sqrt(32 * 32 * maxPatches / (fw * fh))
		r *= min(math.Floor(fw*r/32)/(fw*r/32), math.Floor(fh*r/32)/(fh*r/32))
		fw, fh = fw*r, fh*r
	}
	return min(int(math.Ceil(fw/32)*math.Ceil(fh/32)), maxPatches)
}
