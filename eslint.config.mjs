// @ts-check
// Flat config: typescript-eslint's recommended rules for the TypeScript sources and tests, ESLint's
// recommended rules for the plain-JavaScript scripts (stack, CLI launcher, configs).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Node's globals, for the .js/.mjs files (TypeScript files get them from @types/node). */
const nodeGlobals = Object.fromEntries(
  [
    'process',
    'console',
    'Buffer',
    'URL',
    'URLSearchParams',
    'setTimeout',
    'clearTimeout',
    'setInterval',
    'clearInterval',
    'setImmediate',
    'structuredClone',
    'fetch',
    'AbortController',
    'AbortSignal',
  ].map((name) => [name, 'readonly']),
);
const commonJsGlobals = {
  require: 'readonly',
  module: 'writable',
  exports: 'writable',
  __dirname: 'readonly',
  __filename: 'readonly',
};

export default tseslint.config(
  {
    ignores: ['**/dist/**', '**/node_modules/**', '.stack/**', '.sim/**', 'coverage/**', 'bench/results/**'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      // `_`-prefixed names are deliberately unused (positional parameters, destructured rests).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_' },
      ],
    },
  },
  {
    // A focused or skipped test leaves the others unrun, or itself, while the run passes: none is committed.
    files: ['**/*.test.ts', '**/test/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector:
            'MemberExpression[object.name=/^(describe|it|test)$/][property.name=/^(only|skip|todo)$/]',
          message: 'No focused, skipped or to-do tests: every test runs.',
        },
        {
          // Called, or `.each` of them: a variable named `fit` (a batch's fit, say) stays allowed.
          selector:
            'CallExpression[callee.name=/^(xit|xdescribe|xtest|fit|fdescribe)$/], ' +
            "MemberExpression[object.name=/^(xit|xdescribe|xtest|fit|fdescribe)$/][property.name='each']",
          message: 'No focused or skipped tests: every test runs.',
        },
      ],
    },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { sourceType: 'module', globals: nodeGlobals },
  },
  {
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { ...nodeGlobals, ...commonJsGlobals } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
