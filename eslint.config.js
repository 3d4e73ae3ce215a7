import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'node_modules/**', 'bench/results/**', 'bench/node_modules/**', 'data/**', '.tap/**', '.scratch/**'] }),
  {
    rules: {
      // `const X = {...} as const` with `type X = …` of the same name is the enum replacement (STYLE habit 14)
      '@typescript-eslint/no-redeclare': 'off',
    },
  },
]
