import { defineConfig } from 'vitest/config';

// No React plugin: Vite's own transform compiles TSX with the automatic runtime (tsconfig
// "jsx": "react-jsx"); the plugin would only add fast refresh in development.
// The hub the dev server forwards the API to.
const hub = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.AIHUB_DEV_HUB ?? 'http://127.0.0.1:8080';

export default defineConfig({
  build: {
    target: 'es2022',
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    reportCompressedSize: true,
  },
  server: {
    proxy: {
      '/api': { target: hub, ws: true, changeOrigin: false },
      '/v1': { target: hub },
    },
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}'],
    restoreMocks: true,
  },
});
