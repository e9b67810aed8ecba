// Command k8s-schemas writes the JSON schemas kubeconform validates rendered manifests against.
//
// Usage:
//
//	go run . openapi SWAGGER_JSON OUT_DIR KIND...   # Kubernetes kinds, from the API's OpenAPI v2 document
//	go run . crd OUT_DIR CRD_YAML...                # custom resources, from their CRD manifests
//
// Both write "standalone strict" schemas, the form kubeconform's -strict expects: every $ref is
// inlined (a schema file must stand alone), every object that lists its properties refuses
// others (additionalProperties: false, so a misspelt field fails), and a field may be null (as
// rendered templates often leave optional ones). Kubernetes kinds are written as
// OUT_DIR/KIND-GROUP-VERSION.json (KIND-VERSION.json for the core group), custom resources as
// OUT_DIR/GROUP/KIND_VERSION.json, all lower case: kubeconform's `{{ .ResourceKind }}{{
// .KindSuffix }}.json` and `{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json`.
// This is the conversion of kubeconform's openapi2jsonschema.py, written in Go so that the
// only tool it needs is the Go toolchain that installs helm and kubeconform.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: k8s-schemas openapi SWAGGER_JSON OUT_DIR KIND... | crd OUT_DIR CRD_YAML...")
	}
	var err error
	switch os.Args[1] {
	case "openapi":
		if len(os.Args) < 5 {
			fail("openapi needs SWAGGER_JSON OUT_DIR and at least one KIND")
		}
		err = writeOpenAPISchemas(os.Args[2], os.Args[3], os.Args[4:])
	case "crd":
		if len(os.Args) < 4 {
			fail("crd needs OUT_DIR and at least one CRD_YAML")
		}
		err = writeCRDSchemas(os.Args[2], os.Args[3:])
	default:
		fail("unknown mode " + os.Args[1] + ": expected openapi or crd")
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "k8s-schemas: "+message)
	os.Exit(1)
}

type object = map[string]any

// writeOpenAPISchemas writes one schema per wanted kind (every group and version the API
// document defines it in, e.g. HorizontalPodAutoscaler in autoscaling/v1 and v2).
func writeOpenAPISchemas(swaggerPath, outDir string, kinds []string) error {
	raw, err := os.ReadFile(swaggerPath)
	if err != nil {
		return fmt.Errorf("read the OpenAPI document: %w", err)
	}
	var document object
	if err := json.Unmarshal(raw, &document); err != nil {
		return fmt.Errorf("parse the OpenAPI document %s: %w", swaggerPath, err)
	}
	definitions, _ := document["definitions"].(object)
	if len(definitions) == 0 {
		return fmt.Errorf("%s has no definitions", swaggerPath)
	}
	wanted := map[string]bool{}
	for _, kind := range kinds {
		wanted[kind] = false
	}
	names := make([]string, 0, len(definitions))
	for name := range definitions {
		names = append(names, name)
	}
	sort.Strings(names)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	for _, name := range names {
		definition, _ := definitions[name].(object)
		gvks, _ := definition["x-kubernetes-group-version-kind"].([]any)
		for _, entry := range gvks {
			gvk, _ := entry.(object)
			kind, _ := gvk["kind"].(string)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			if _, ok := wanted[kind]; !ok {
				continue
			}
			wanted[kind] = true
			resolver := &refResolver{definitions: definitions, inProgress: map[string]bool{}}
			schema := resolver.inline(definition)
			strict(schema, true)
			suffix := "-" + strings.ToLower(version)
			if group != "" {
				suffix = "-" + strings.ToLower(strings.Split(group, ".")[0]) + suffix
			}
			if err := writeJSON(filepath.Join(outDir, strings.ToLower(kind)+suffix+".json"), schema); err != nil {
				return err
			}
		}
	}
	var missing []string
	for kind, found := range wanted {
		if !found {
			missing = append(missing, kind)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("no definition of kind %s in %s", strings.Join(missing, ", "), swaggerPath)
	}
	return nil
}

// refResolver inlines "#/definitions/NAME" references. A definition that refers to itself
// (none of the workload kinds do) is cut at the second visit and accepts anything there.
type refResolver struct {
	definitions object
	inProgress  map[string]bool
}

func (resolver *refResolver) inline(node any) any {
	switch value := node.(type) {
	case object:
		if ref, ok := value["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, "#/definitions/")
			target, found := resolver.definitions[name].(object)
			if !found || resolver.inProgress[name] {
				return object{}
			}
			resolver.inProgress[name] = true
			defer delete(resolver.inProgress, name)
			return resolver.inline(openAPIQuirks(name, target))
		}
		result := object{}
		for key, child := range value {
			if key == "x-kubernetes-group-version-kind" {
				continue
			}
			result[key] = resolver.inline(child)
		}
		return result
	case []any:
		result := make([]any, len(value))
		for index, child := range value {
			result[index] = resolver.inline(child)
		}
		return result
	default:
		return value
	}
}

// openAPIQuirks replaces the definitions whose OpenAPI form says less than the API accepts:
// an int-or-string (ports, maxUnavailable) and a quantity (cpu: 1 as well as cpu: 100m).
func openAPIQuirks(name string, definition object) object {
	switch name {
	case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
		return object{"oneOf": []any{object{"type": "string"}, object{"type": "integer"}}}
	case "io.k8s.apimachinery.pkg.api.resource.Quantity":
		return object{"oneOf": []any{object{"type": "string"}, object{"type": "number"}}}
	}
	return definition
}

// strict makes every object with listed properties refuse unknown ones and lets every typed
// value be null, except the document itself.
func strict(node any, root bool) {
	switch value := node.(type) {
	case object:
		if format, _ := value["format"].(string); format == "int-or-string" {
			delete(value, "format")
			delete(value, "type")
			value["oneOf"] = []any{object{"type": "string"}, object{"type": "integer"}}
		}
		if _, hasProperties := value["properties"].(object); hasProperties {
			if _, set := value["additionalProperties"]; !set {
				value["additionalProperties"] = false
			}
		}
		if typeName, ok := value["type"].(string); ok && !root {
			value["type"] = []any{typeName, "null"}
		}
		for key, child := range value {
			// Under "properties" the keys are field names, not schema keywords.
			if key == "properties" {
				if properties, ok := child.(object); ok {
					for _, property := range properties {
						strict(property, false)
					}
					continue
				}
			}
			strict(child, false)
		}
	case []any:
		for _, child := range value {
			strict(child, false)
		}
	}
}

// writeCRDSchemas writes the schema of every served version of every CRD in the files.
func writeCRDSchemas(outDir string, crdPaths []string) error {
	for _, path := range crdPaths {
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read CRD: %w", err)
		}
		for _, document := range strings.Split(string(raw), "\n---") {
			if strings.TrimSpace(document) == "" {
				continue
			}
			var crd object
			if err := yaml.Unmarshal([]byte(document), &crd); err != nil {
				return fmt.Errorf("parse %s: %w", path, err)
			}
			if crd["kind"] != "CustomResourceDefinition" {
				continue
			}
			spec, _ := crd["spec"].(object)
			group, _ := spec["group"].(string)
			names, _ := spec["names"].(object)
			kind, _ := names["kind"].(string)
			versions, _ := spec["versions"].([]any)
			if group == "" || kind == "" || len(versions) == 0 {
				return fmt.Errorf("%s: a CRD without group, kind or versions", path)
			}
			for _, entry := range versions {
				version, _ := entry.(object)
				name, _ := version["name"].(string)
				validation, _ := version["schema"].(object)
				schema, _ := validation["openAPIV3Schema"].(object)
				if schema == nil {
					return fmt.Errorf("%s: %s %s has no openAPIV3Schema", path, kind, name)
				}
				crdStrict(schema)
				target := filepath.Join(outDir, group, strings.ToLower(kind)+"_"+name+".json")
				if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
					return err
				}
				if err := writeJSON(target, schema); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// crdStrict refuses unknown properties where the CRD lists them and does not preserve unknown
// fields, as the API server prunes them (kubeconform -strict then reports them).
func crdStrict(node any) {
	switch value := node.(type) {
	case object:
		_, hasProperties := value["properties"].(object)
		_, set := value["additionalProperties"]
		preserve, _ := value["x-kubernetes-preserve-unknown-fields"].(bool)
		if hasProperties && !set && !preserve {
			value["additionalProperties"] = false
		}
		if value["x-kubernetes-int-or-string"] == true {
			delete(value, "type")
			value["oneOf"] = []any{object{"type": "string"}, object{"type": "integer"}}
		}
		for key, child := range value {
			if key == "properties" {
				if properties, ok := child.(object); ok {
					for _, property := range properties {
						crdStrict(property)
					}
					continue
				}
			}
			crdStrict(child)
		}
	case []any:
		for _, child := range value {
			crdStrict(child)
		}
	}
}

func writeJSON(path string, schema any) error {
	encoded, err := json.MarshalIndent(schema, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return os.WriteFile(path, append(encoded, '\n'), 0o644)
}
