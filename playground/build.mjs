// Builds the playground into app/static/playground/: index.html plus content-hashed assets.
//
// Deterministic on purpose (tests/playground/test_build.py rebuilds and compares bytes with
// what is committed): no timestamps, no source maps (they would carry paths), file names
// from content hashes, assets written in sorted order, stale ones removed.
import { build } from "esbuild";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.env.PLAYGROUND_OUT ?? join(here, "..", "app", "static", "playground"));
const assets = join(out, "assets");

await rm(assets, { recursive: true, force: true });
await mkdir(assets, { recursive: true });

const result = await build({
  absWorkingDir: here,
  entryPoints: { app: "src/main.ts" },
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  entryNames: "[name]-[hash]",
  outdir: assets,
  metafile: true,
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
});

const written = Object.keys(result.metafile.outputs).map((file) => basename(file)).sort();
const script = written.find((name) => name.endsWith(".js"));
const style = written.find((name) => name.endsWith(".css"));
if (!script || !style) throw new Error(`expected one .js and one .css, got ${written}`);

const template = await readFile(join(here, "src", "index.html"), "utf8");
const html = template
  .replace("%SCRIPT%", `/playground/assets/${script}`)
  .replace("%STYLE%", `/playground/assets/${style}`);
await writeFile(join(out, "index.html"), html);

for (const name of (await readdir(assets)).sort()) {
  const size = (await readFile(join(assets, name))).length;
  console.log(`${name.padEnd(28)} ${(size / 1024).toFixed(1)} KiB`);
}
