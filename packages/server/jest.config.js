module.exports = { ...require('../../jest.preset.js'), displayName: '@cascache/server' };
